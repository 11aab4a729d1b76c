package kubee2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The harness: TestMain finds (or builds, through scripts/kube-tools.sh)
// kube-apiserver, etcd and kubectl, and helm in .tools/bin; every test
// starts its own control plane with startCluster, which the test's cleanup
// always stops.
var (
	repoRoot string
	toolsDir string // kube-apiserver, etcd, kubectl
	helmBin  string
	blobfs   string // this tree's blobfs, for `blobfs bootstrap`
	tmpRoot  string
	setupErr error
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	setupErr = setup()
	code := m.Run()
	if tmpRoot != "" {
		os.RemoveAll(tmpRoot)
	}
	return code
}

// requireTools fails the test when the control-plane binaries are missing:
// scripts/setup.sh (make deps) builds them, so CI always has them.
func requireTools(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("kube e2e harness: %v", setupErr)
	}
}

func setup() error {
	var err error
	if repoRoot, err = moduleRoot(); err != nil {
		return err
	}
	sweepStale()
	if tmpRoot, err = os.MkdirTemp("", tempPrefix); err != nil {
		return err
	}
	// Our pid, so that a later run can remove what this one leaves if it
	// is killed before its cleanup (a -timeout panic).
	if err := os.WriteFile(filepath.Join(tmpRoot, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	helmBin = filepath.Join(repoRoot, ".tools", "bin", "helm")
	if _, err := os.Stat(helmBin); err != nil {
		return fmt.Errorf("helm not found at %s (scripts/setup.sh installs it; run `make deps`): %w", helmBin, err)
	}
	// The script is idempotent: it prints the directory at once when the
	// binaries are built, and builds them (minutes) otherwise.
	script := exec.Command(filepath.Join(repoRoot, "scripts", "kube-tools.sh"))
	script.Dir = repoRoot
	script.Stderr = os.Stderr
	out, err := script.Output()
	if err != nil {
		return fmt.Errorf("scripts/kube-tools.sh (builds kube-apiserver, etcd, kubectl into .tools/kube): %w", err)
	}
	toolsDir = strings.TrimSpace(string(out))
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(toolsDir, b)); err != nil {
			return fmt.Errorf("scripts/kube-tools.sh printed %q but %s is not there: %w", toolsDir, b, err)
		}
	}
	blobfs = filepath.Join(tmpRoot, "blobfs")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(gobin, "build", "-o", blobfs, "./cmd/blobfs")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/blobfs: %v\n%s", err, out)
	}
	return nil
}

// tempPrefix names the harness's directories under os.TempDir().
const tempPrefix = "blobfs-kube-e2e-"

// sweepStale removes the directories of earlier runs that were killed
// before their cleanup (their processes got SIGKILL as their parent died).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue // starting right now
		}
		if pid, err := strconv.Atoi(string(b)); err == nil && pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// cluster is one etcd + kube-apiserver pair on loopback ports: no kubelet,
// scheduler or controller-manager, so nothing runs; what is tested is what
// the API server admits, validates and stores.
type cluster struct {
	dir        string
	kubeconfig string
	server     string // https://127.0.0.1:PORT
	token      string
	ca         *x509.CertPool
}

// startCluster starts a fresh control plane for one test and stops it when
// the test ends, whatever happened.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	requireTools(t)
	dir, err := os.MkdirTemp(tmpRoot, "c")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{dir: dir}
	start := time.Now()
	etcdURL := startEtcd(t, dir)
	c.startAPIServer(t, etcdURL)
	t.Logf("etcd and kube-apiserver %s ready in %v", c.server, time.Since(start).Round(time.Millisecond))
	return c
}

// startEtcd starts etcd with a client and a peer port, retrying on the
// rare port grabbed between probing and binding.
func startEtcd(t *testing.T, dir string) string {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		client, peer := freePort(t), freePort(t)
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
		data := filepath.Join(dir, fmt.Sprintf("etcd-%d", attempt))
		p := startProc(t, "etcd", filepath.Join(dir, fmt.Sprintf("etcd-%d.log", attempt)), filepath.Join(toolsDir, "etcd"),
			"--name=e2e", "--data-dir="+data,
			"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=e2e="+peerURL,
			// A test's data need not survive a power cut; fsync on a shared
			// 2-core machine only slows every write down.
			"--unsafe-no-fsync", "--log-level=warn")
		err := waitUntil(p, 60*time.Second, func() error {
			resp, err := http.Get(clientURL + "/health")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("etcd /health: %s", resp.Status)
			}
			return nil
		})
		if err == nil {
			return clientURL
		}
		lastErr = err
		p.stop()
	}
	t.Fatalf("etcd did not start: %v", lastErr)
	return ""
}

func (c *cluster) startAPIServer(t *testing.T, etcdURL string) {
	t.Helper()
	// The service-account token signer (required flags), and a static
	// bearer token for the test's admin (group system:masters).
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(c.dir, "sa.key")
	saPub := filepath.Join(c.dir, "sa.pub")
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	tok := make([]byte, 16)
	rand.Read(tok)
	c.token = hex.EncodeToString(tok)
	tokens := filepath.Join(c.dir, "tokens.csv")
	writeFile(t, tokens, []byte(c.token+`,e2e-admin,e2e-admin,"system:masters"`+"\n"))
	certDir := filepath.Join(c.dir, "pki")

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		c.server = fmt.Sprintf("https://127.0.0.1:%d", port)
		p := startProc(t, "kube-apiserver", filepath.Join(c.dir, fmt.Sprintf("apiserver-%d.log", attempt)), filepath.Join(toolsDir, "kube-apiserver"),
			"--etcd-servers="+etcdURL,
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
			// A self-signed serving certificate for 127.0.0.1/localhost.
			"--cert-dir="+certDir,
			"--token-auth-file="+tokens,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file="+saPub,
			"--service-account-signing-key-file="+saKey,
			"--service-cluster-ip-range=10.0.0.0/24",
			// As on AKS: the node DaemonSet's containers are privileged,
			// and pod templates are validated against this.
			"--allow-privileged=true",
			// Loopback only: the kubernetes Service cannot have a loopback
			// endpoint, and nothing here needs one.
			"--endpoint-reconciler-type=none",
			"--enable-priority-and-fairness=false", "--profiling=false")
		err := waitUntil(p, 2*time.Minute, func() error {
			if c.ca == nil {
				// Written at start-up: the serving certificate, then its CA.
				b, err := os.ReadFile(filepath.Join(certDir, "apiserver.crt"))
				if err != nil {
					return err
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(b) {
					return errors.New("no certificate in apiserver.crt yet")
				}
				c.ca = pool
			}
			// Ready, and the system namespaces exist (helm installs into
			// kube-system).
			for _, path := range []string{"/readyz", "/api/v1/namespaces/kube-system"} {
				if err := c.get(path); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			c.writeKubeconfig(t, certDir)
			return
		}
		lastErr = err
		p.stop()
		c.ca = nil
	}
	t.Fatalf("kube-apiserver did not become ready: %v", lastErr)
}

// get fetches path with the admin token and wants 200.
func (c *cluster) get(path string) error {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.ca}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, c.server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

func (c *cluster) writeKubeconfig(t *testing.T, certDir string) {
	t.Helper()
	c.kubeconfig = filepath.Join(c.dir, "kubeconfig")
	writeFile(t, c.kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: e2e-admin
  user:
    token: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: e2e-admin
current-context: e2e
`, c.server, filepath.Join(certDir, "apiserver.crt"), c.token)))
}

// kubectl runs kubectl against the cluster with stdin and returns its
// stdout and, on failure, an error holding stderr.
func (c *cluster) kubectl(stdin []byte, args ...string) (string, error) {
	return c.run(filepath.Join(toolsDir, "kubectl"), stdin, append([]string{"--kubeconfig=" + c.kubeconfig}, args...)...)
}

// mustKubectl is kubectl that fails the test on error.
func (c *cluster) mustKubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := c.kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// helm runs helm against the cluster, with its cache and config in the
// cluster's directory (not ~/.cache/helm).
func (c *cluster) helm(args ...string) (string, error) {
	return c.run(helmBin, nil, append([]string{"--kubeconfig=" + c.kubeconfig}, args...)...)
}

func (c *cluster) run(bin string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(c.dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(c.dir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(c.dir, "helm", "data"),
		"KUBECACHEDIR="+filepath.Join(c.dir, "kube-cache"))
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// proc is a control-plane process of one test.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// startProc starts bin in its own process group with its output in logPath;
// the test's cleanup stops it (SIGTERM, then SIGKILL), and it gets SIGKILL
// if the test binary dies without cleaning up (a -timeout panic): SIGTERM
// is not enough then, a kube-apiserver whose etcd went at the same moment
// never finishes its graceful shutdown.
func startProc(t *testing.T, name, logPath, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: exec.Command(bin, args...), log: logPath, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	// The parent-death signal follows the thread that forked: keep that
	// thread alive, locked, until the process exits.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			close(p.exited)
			return
		}
		started <- nil
		p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log tail (%s):\n%s", name, logPath, p.logTail(3000))
		}
		p.stop()
	})
	return p
}

var stopMu sync.Mutex

func (p *proc) stop() {
	stopMu.Lock()
	defer stopMu.Unlock()
	select {
	case <-p.exited:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

func (p *proc) logTail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitUntil polls ready until it succeeds, the process exits, or timeout.
func waitUntil(p *proc, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v\n%s", p.name, err, p.logTail(3000))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v\n%s", p.name, timeout, err, p.logTail(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// moduleRoot is the directory holding go.mod, above the test's directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the test directory")
		}
		dir = parent
	}
}
