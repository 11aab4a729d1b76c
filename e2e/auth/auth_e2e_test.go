package authe2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/blobfs/blobfs/auth/entratest"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/mountinfo"
	"github.com/blobfs/blobfs/internal/testenv"
)

// The harness: TestMain builds the binary once and starts one Azurite
// (HTTPS, --oauth basic); each test starts its own Entra stand-in, makes
// its own containers and mounts under tmpRoot. At the end no FUSE mount
// may remain under tmpRoot.
var (
	blobfsBin string
	az        *azurite.Server
	tmpRoot   string
	setupErr  error
	seq       atomic.Int64
)

// Ids the stand-in knows; GUID-shaped like real ones.
const (
	tenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	clientID = "0b7f4a2c-51d3-4c6e-9a1f-3e2d1c0b9a88"
	miClient = "5e1c2d3b-7a8f-4e6d-8c9b-0a1b2c3d4e5f"
)

// tokenLifetime is what the stand-in issues in the Entra tests: short, so
// a refresh (at a third of the lifetime before expiry) comes every few
// seconds and revocation bites within one lifetime.
const tokenLifetime = 6 * time.Second

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if _, err := os.Stat("/dev/fuse"); err == nil && os.Geteuid() == 0 {
		setupErr = setup()
	}
	code := m.Run()
	if tmpRoot != "" {
		if left := fuseMountsUnder(tmpRoot); len(left) > 0 {
			for _, p := range left {
				fmt.Fprintf(os.Stderr, "e2e/auth: FAIL: FUSE mount left behind: %s\n", p)
				_ = exec.Command("umount", "-l", p).Run()
			}
			code = 1
		}
		if len(fuseMountsUnder(tmpRoot)) == 0 {
			os.RemoveAll(tmpRoot)
		}
	}
	if az != nil {
		az.Close()
	}
	return code
}

func setup() error {
	var err error
	if tmpRoot, err = os.MkdirTemp("", "blobfs-e2e-auth-"); err != nil {
		return err
	}
	blobfsBin = filepath.Join(tmpRoot, "blobfs")
	gobin := "go"
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		gobin = p
	}
	build := exec.Command(gobin, "build", "-o", blobfsBin, "./cmd/blobfs")
	build.Dir = "../.." // the module root; tests run in e2e/auth
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/blobfs: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	az, err = azurite.Start(ctx, azurite.Options{HTTPS: true, OAuth: true})
	return err
}

func requireHarness(t *testing.T) {
	t.Helper()
	testenv.RequireFUSE(t)
	if setupErr != nil {
		t.Fatalf("e2e/auth harness: %v", setupErr)
	}
	if az == nil {
		t.Fatal("e2e/auth harness did not start")
	}
}

// --- storage setup (shared key, directly, not through a mount) -------------

func keyClient(t *testing.T, name string) *container.Client {
	t.Helper()
	cred, err := container.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		t.Fatal(err)
	}
	tr := az.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	c, err := container.NewClientWithSharedKeyCredential(az.BlobEndpoint()+"/"+name, cred,
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: tr}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newContainer creates a fresh container (public when access is set) and
// returns its name and a shared-key client for it.
func newContainer(t *testing.T, access *container.PublicAccessType) (string, *container.Client) {
	t.Helper()
	name := fmt.Sprintf("auth-e2e-%d-%d", os.Getpid(), seq.Add(1))
	c := keyClient(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Create(ctx, &container.CreateOptions{Access: access}); err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	return name, c
}

func putBlob(t *testing.T, c *container.Client, name string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.NewBlockBlobClient(name).UploadBuffer(ctx, data, nil); err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
}

// --- the stand-in ------------------------------------------------------------

// standIn starts the Entra stand-in with short tokens and registers the
// workload identity app with a fresh federated token written to a file.
func standIn(t *testing.T, dir string) (*entratest.Server, string, string) {
	t.Helper()
	srv := entratest.New(t, entratest.Options{Lifetime: tokenLifetime})
	tokenFile := filepath.Join(dir, "azure-identity-token")
	a := entratest.FederatedToken("system:serviceaccount:default:blobfs")
	writeAtomic(t, tokenFile, a)
	srv.SetAssertion(tenantID, clientID, a)
	return srv, tokenFile, a
}

// writeAtomic replaces path's content the way the kubelet does: a new file
// renamed over the old one, so a reader never sees half a token.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// caFile writes the PEMs of every CA the mount must trust into one file,
// for SSL_CERT_FILE.
func caFile(t *testing.T, dir string, pems ...[]byte) string {
	t.Helper()
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, bytes.Join(pems, []byte("\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// --- mounting ----------------------------------------------------------------

type mount struct {
	Dir, CacheDir, LogFile string
	PID                    int
	env                    []string
}

// testDir is a fresh directory under tmpRoot, removed at the end unless
// something is still mounted below it.
func testDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(tmpRoot, "t-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if len(fuseMountsUnder(d)) == 0 {
			os.RemoveAll(d)
		}
	})
	return d
}

// mountEnv is the process environment without any Azure, managed identity
// or CA setting of the machine's own, plus SSL_CERT_FILE and extra.
func mountEnv(ca string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "AZURE_"), strings.HasPrefix(name, "IDENTITY_"), strings.HasPrefix(name, "MSI_"),
			strings.HasPrefix(name, "IMDS_"), strings.HasPrefix(name, "SSL_CERT_"), name == "_BLOBFS_DAEMON_READY_FD":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "SSL_CERT_FILE="+ca)
	return append(env, extra...)
}

var daemonPID = regexp.MustCompile(`daemon pid (\d+)`)

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

func runBlobfs(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, blobfsBin, args...)
	cmd.Env = env
	cmd.Dir = tmpRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run blobfs %s: %v\n%s", strings.Join(args, " "), err, r)
	}
	return r
}

// mountT mounts container in daemon mode with the real binary and env
// (credentials only there, never in argv), checks for leaks of secrets()
// before unmounting, and unmounts when the test ends.
func mountT(t *testing.T, containerName string, env []string, secrets func() []string, extra ...string) *mount {
	t.Helper()
	requireHarness(t)
	base := testDir(t)
	m := &mount{
		Dir:      filepath.Join(base, "mnt"),
		CacheDir: filepath.Join(base, "cache"),
		LogFile:  filepath.Join(base, "blobfs.log"),
		env:      env,
	}
	if err := os.Mkdir(m.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount", m.Dir, "--container", containerName, "--endpoint", az.BlobEndpoint(),
		"--cache-dir", m.CacheDir, "--log-file", m.LogFile}, extra...)
	r := runBlobfs(t, env, args...)
	if r.code != 0 {
		t.Fatalf("blobfs mount: %s\nlog:\n%s", r, readFile(m.LogFile))
	}
	sm := daemonPID.FindStringSubmatch(r.stdout)
	if sm == nil {
		t.Fatalf("blobfs mount printed no daemon pid: %q", r.stdout)
	}
	m.PID, _ = strconv.Atoi(sm[1])
	t.Cleanup(func() {
		// Before unmounting, while the daemon's /proc entry exists.
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.PID))
		if err != nil {
			t.Errorf("daemon pid %d: cmdline: %v", m.PID, err)
		}
		m.unmount(t)
		// After unmounting: the log is complete.
		log, sec := readFile(m.LogFile), secrets()
		assertNoLeak(t, "daemon command line", string(cmdline), sec)
		assertNoLeak(t, "daemon log "+m.LogFile, log, sec)
		t.Logf("leak check: %d secrets absent from the daemon's command line (%d bytes) and log (%d bytes)", len(sec), len(cmdline), len(log))
		if len(cmdline) == 0 || len(log) == 0 {
			t.Errorf("leak check had nothing to look at: cmdline %d bytes, log %d bytes", len(cmdline), len(log))
		}
		if t.Failed() {
			t.Logf("daemon log %s:\n%s", m.LogFile, tail(readFile(m.LogFile), 6000))
		}
	})
	if !isMounted(m.Dir) {
		t.Fatalf("blobfs mount returned 0 but %s is not mounted\n%s", m.Dir, r)
	}
	return m
}

func (m *mount) path(name string) string { return filepath.Join(m.Dir, name) }

// unmount runs `blobfs unmount`, waits for the daemon to exit, and makes
// sure nothing is left mounted whatever happened.
func (m *mount) unmount(t *testing.T) {
	t.Helper()
	if !isMounted(m.Dir) {
		t.Errorf("%s was no longer mounted at the end of the test", m.Dir)
		return
	}
	if r := runBlobfs(t, m.env, "unmount", m.Dir); r.code != 0 {
		t.Errorf("blobfs unmount %s: %s", m.Dir, r)
	}
	deadline := time.Now().Add(time.Minute)
	for processAlive(m.PID) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if processAlive(m.PID) {
		t.Errorf("daemon pid %d still running a minute after unmount", m.PID)
		_ = syscall.Kill(m.PID, syscall.SIGKILL)
	}
	if isMounted(m.Dir) {
		t.Errorf("%s is still mounted after unmount", m.Dir)
		_ = exec.Command("umount", "-l", m.Dir).Run()
	}
}

func assertNoLeak(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 8 {
			continue // too short to mean anything (and never a real secret)
		}
		if strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%d bytes, starting %.4q)", where, len(s), s)
		}
	}
}

// --- file operations through the mount --------------------------------------

// roundTrip writes a new file through the mount, reads it back and lists
// the directory: each is a storage request with the current credential
// (the upload at close at least).
func roundTrip(m *mount, i int) error {
	name := fmt.Sprintf("f-%04d.txt", i)
	want := []byte(fmt.Sprintf("blobfs auth e2e %d %s\n", i, time.Now().Format(time.RFC3339Nano)))
	if err := os.WriteFile(m.path(name), want, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	got, err := os.ReadFile(m.path(name))
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("read %s: got %q, want %q", name, got, want)
	}
	ents, err := os.ReadDir(m.Dir)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if !slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == name }) {
		return fmt.Errorf("list: %s missing", name)
	}
	return nil
}

// keepWorking runs roundTrip until done says stop, failing the test on
// the first error; it gives up (failing) after bound.
func keepWorking(t *testing.T, m *mount, start int, bound time.Duration, what string, done func() bool) int {
	t.Helper()
	deadline := time.Now().Add(bound)
	i := start
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v (after %d operations)", what, bound, i-start)
		}
		if err := roundTrip(m, i); err != nil {
			t.Fatalf("%s: operation %d through the mount failed: %v", what, i, err)
		}
		i++
		time.Sleep(100 * time.Millisecond)
	}
	return i
}

// --- tests -------------------------------------------------------------------

// workloadMount mounts a fresh container with workload identity through the
// stand-in, configured exactly as the AKS webhook does (environment only),
// plus --auth-mode workloadidentity.
func workloadMount(t *testing.T) (*mount, *entratest.Server, string, *[]string) {
	t.Helper()
	requireHarness(t)
	dir := testDir(t)
	srv, tokenFile, a := standIn(t, dir)
	assertions := &[]string{a}
	name, _ := newContainer(t, nil)
	env := mountEnv(caFile(t, dir, az.CACertPEM(), srv.CACertPEM()),
		"AZURE_CLIENT_ID="+clientID, "AZURE_TENANT_ID="+tenantID,
		"AZURE_FEDERATED_TOKEN_FILE="+tokenFile, "AZURE_AUTHORITY_HOST="+srv.AuthorityHost(),
		"AZURE_STORAGE_ACCOUNT="+azurite.Account)
	secrets := func() []string { return append(slices.Clone(*assertions), srv.Tokens()...) }
	m := mountT(t, name, env, secrets, "--auth-mode", "workloadidentity")
	return m, srv, tokenFile, assertions
}

// Issue #4: workload identity with short tokens keeps every operation
// working across several refreshes.
func TestWorkloadIdentityShortTokens(t *testing.T) {
	m, srv, _, _ := workloadMount(t)
	if srv.Stats(clientID).Issued < 1 {
		t.Fatal("the mount came up without a token from the stand-in")
	}
	// ≥ 4 tokens issued = the first and at least three refreshes.
	keepWorking(t, m, 0, 90*time.Second, "4 tokens issued", func() bool { return srv.Stats(clientID).Issued >= 4 })
	st := srv.Stats(clientID)
	t.Logf("stand-in: %d tokens issued, %d rejected", st.Issued, st.Rejected)
	if st.Rejected != 0 {
		t.Errorf("stand-in rejected %d token requests from a valid identity", st.Rejected)
	}
}

// Issue #4: the kubelet replaces the projected token file and the
// federated credential accepts only the new token; the mount reads the
// file at each refresh and keeps working.
func TestWorkloadIdentityTokenFileRotation(t *testing.T) {
	m, srv, tokenFile, assertions := workloadMount(t)
	i := keepWorking(t, m, 0, 60*time.Second, "2 tokens issued", func() bool { return srv.Stats(clientID).Issued >= 2 })

	rotated := entratest.FederatedToken("system:serviceaccount:default:blobfs")
	*assertions = append(*assertions, rotated)
	writeAtomic(t, tokenFile, rotated)
	srv.SetAssertion(tenantID, clientID, rotated) // the old one is refused from now on
	before := srv.Stats(clientID).Issued

	keepWorking(t, m, i, 60*time.Second, "2 tokens issued for the rotated assertion", func() bool {
		st := srv.Stats(clientID)
		return st.LastAssertion == rotated && st.Issued >= before+2
	})
	if st := srv.Stats(clientID); st.LastAssertion != rotated {
		t.Errorf("stand-in last saw %.8q…, not the rotated assertion", st.LastAssertion)
	}
}

// Issue #4: a revoked identity fails operations with EACCES once its last
// token expires, the daemon log says who (client and tenant) but not the
// token, and restoring the identity brings the same mount back.
func TestWorkloadIdentityRevokedAndRestored(t *testing.T) {
	m, srv, _, _ := workloadMount(t)
	c := 0
	if err := roundTrip(m, c); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	c++

	srv.Revoke(clientID)
	// A new file's upload needs a token; poll until the last one expires.
	var failed error
	deadline := time.Now().Add(tokenLifetime + 30*time.Second)
	for failed == nil {
		if time.Now().After(deadline) {
			t.Fatalf("operations still succeed %v after revocation", tokenLifetime+30*time.Second)
		}
		name := fmt.Sprintf("revoked-%04d.txt", c)
		c++
		if err := os.WriteFile(m.path(name), []byte("x"), 0o644); err != nil {
			failed = err
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !errors.Is(failed, fs.ErrPermission) || !errors.Is(failed, syscall.EACCES) {
		t.Fatalf("revoked identity: got %v, want EACCES", failed)
	}
	t.Logf("revoked: %v", failed)

	// The log names the identity (client and tenant) in the failure line.
	var line string
	sc := bufio.NewScanner(strings.NewReader(readFile(m.LogFile)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, clientID) && strings.Contains(l, tenantID) &&
			(strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN")) {
			line = l
			break
		}
	}
	if line == "" {
		t.Errorf("daemon log has no warning or error naming client %s and tenant %s:\n%s", clientID, tenantID, tail(readFile(m.LogFile), 4000))
	} else {
		t.Logf("log: %s", line)
		for _, tok := range srv.Tokens() {
			if strings.Contains(line, tok) {
				t.Error("the failure log line contains an access token")
			}
		}
	}

	srv.Restore(clientID)
	deadline = time.Now().Add(90 * time.Second)
	for {
		err := roundTrip(m, c)
		c++
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("after restore: %v (want success, or EACCES until the next retry)", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("operations still fail 90s after the identity was restored: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for range 3 {
		if err := roundTrip(m, c); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
		c++
	}
}

// Issue #4: every other auth mode mounts the same Azurite (HTTPS, OAuth
// on) and reads a file; no secret reaches the daemon's command line or
// log (checked by mountT at the end of each subtest).
func TestOtherModesMountAndRead(t *testing.T) {
	requireHarness(t)
	content := []byte("hello from blobfs auth e2e\n")
	readHello := func(t *testing.T, m *mount) {
		t.Helper()
		got, err := os.ReadFile(m.path("hello.txt"))
		if err != nil {
			t.Fatalf("read through the mount: %v", err)
		}
		if !bytes.Equal(got, content) {
			t.Fatalf("read %q, want %q", got, content)
		}
		if _, err := os.ReadDir(m.Dir); err != nil {
			t.Fatalf("list through the mount: %v", err)
		}
	}

	t.Run("SharedKey", func(t *testing.T) {
		name, c := newContainer(t, nil)
		putBlob(t, c, "hello.txt", content)
		dir := testDir(t)
		env := mountEnv(caFile(t, dir, az.CACertPEM()),
			"AZURE_STORAGE_ACCOUNT="+azurite.Account, "AZURE_STORAGE_ACCESS_KEY="+azurite.Key)
		m := mountT(t, name, env, func() []string { return []string{azurite.Key} }, "--auth-mode", "key")
		readHello(t, m)
		if err := roundTrip(m, 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("SAS", func(t *testing.T) {
		name, c := newContainer(t, nil)
		putBlob(t, c, "hello.txt", content)
		cred, err := container.NewSharedKeyCredential(azurite.Account, azurite.Key)
		if err != nil {
			t.Fatal(err)
		}
		perms := sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}
		qp, err := sas.BlobSignatureValues{
			Protocol:      sas.ProtocolHTTPS,
			StartTime:     time.Now().Add(-5 * time.Minute).UTC(),
			ExpiryTime:    time.Now().Add(time.Hour).UTC(),
			Permissions:   perms.String(),
			ContainerName: name,
		}.SignWithSharedKey(cred)
		if err != nil {
			t.Fatal(err)
		}
		sig := qp.Signature()
		if sig == "" {
			t.Fatal("SAS without a signature")
		}
		dir := testDir(t)
		env := mountEnv(caFile(t, dir, az.CACertPEM()),
			"AZURE_STORAGE_ACCOUNT="+azurite.Account, "AZURE_STORAGE_SAS_TOKEN="+qp.Encode())
		// The signature both raw and as it appears URL-encoded in a query.
		secrets := func() []string { return []string{sig, qp.Encode(), urlQueryEscape(sig), azurite.Key} }
		m := mountT(t, name, env, secrets, "--auth-mode", "sas")
		readHello(t, m)
		if err := roundTrip(m, 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ManagedIdentity", func(t *testing.T) {
		name, c := newContainer(t, nil)
		putBlob(t, c, "hello.txt", content)
		dir := testDir(t)
		srv := entratest.New(t, entratest.Options{Lifetime: time.Hour})
		srv.AddManagedIdentity(entratest.ManagedIdentity{TenantID: tenantID, ClientID: miClient, SystemAssigned: true})
		env := mountEnv(caFile(t, dir, az.CACertPEM(), srv.CACertPEM()),
			"AZURE_STORAGE_ACCOUNT="+azurite.Account,
			"IDENTITY_ENDPOINT="+srv.ManagedIdentityEndpoint(), "IDENTITY_HEADER="+srv.ManagedIdentityHeader())
		secrets := func() []string { return append(srv.Tokens(), srv.ManagedIdentityHeader()) }
		m := mountT(t, name, env, secrets, "--auth-mode", "msi")
		readHello(t, m)
		if err := roundTrip(m, 0); err != nil {
			t.Fatal(err)
		}
		if st := srv.Stats(miClient); st.Issued < 1 {
			t.Errorf("the managed identity endpoint issued no token (stats %+v)", st)
		}
	})

	t.Run("Anonymous", func(t *testing.T) {
		name, c := newContainer(t, to.Ptr(container.PublicAccessTypeContainer))
		putBlob(t, c, "hello.txt", content)
		dir := testDir(t)
		env := mountEnv(caFile(t, dir, az.CACertPEM()), "AZURE_STORAGE_ACCOUNT="+azurite.Account)
		m := mountT(t, name, env, func() []string { return []string{azurite.Key} }, "--auth-mode", "anonymous", "--read-only")
		readHello(t, m)
	})
}

// --- small helpers -------------------------------------------------------------

func urlQueryEscape(s string) string {
	r := strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D")
	return r.Replace(s)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func isMounted(dir string) bool {
	ok, _ := mountinfo.IsMountPoint(dir)
	return ok
}

func fuseMountsUnder(root string) []string {
	var out []string
	for _, m := range mountinfo.FUSEUnder(root) {
		out = append(out, m.Point)
	}
	return out
}
