// Package azurite installs and runs the Azurite Blob emulator for tests and
// demos: a pinned version from npm, one process per Server on a free
// loopback port, in memory, optionally over HTTPS with a generated
// certificate and with OAuth bearer tokens. FaultProxy sits in front of a
// Server to inject the failures Azure produces (503 Server Busy, corrupted
// bodies) over real HTTP, so the SDK's own retry policy is what gets tested.
//
// Everything here dials loopback only (testenv.LoopbackDialer).
package azurite

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/blobfs/blobfs/internal/testenv"
)

// Account is Azurite's built-in storage account.
const Account = "devstoreaccount1"

// Key is the built-in account's key. It is published in Azurite's and
// Microsoft's documentation and grants access to nothing but a local
// emulator, so it is not a secret.
const Key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// Options configure a Server. The zero value is an in-memory HTTP server.
type Options struct {
	// HTTPS serves TLS with a self-signed certificate generated for
	// 127.0.0.1 and localhost; clients trust it through CACertPool,
	// CACertPEM or Transport.
	HTTPS bool
	// OAuth makes Azurite accept bearer tokens (--oauth basic) besides
	// shared key. It requires HTTPS. See Token and TokenCredential.
	OAuth bool
	// InstallDir is where Azurite is installed; empty means
	// DefaultInstallDir.
	InstallDir string
	// StartTimeout bounds the wait for Azurite to answer HTTP; zero
	// means one minute.
	StartTimeout time.Duration
	// AccessLog keeps Azurite's per-request access log in the log file.
	// Off by default: a conformance run makes tens of thousands of
	// requests.
	AccessLog bool
	// ExtentMemoryLimitMB caps the blob bytes Azurite keeps in memory;
	// zero keeps Azurite's default of half the machine's memory.
	ExtentMemoryLimitMB int
	// Detached lets the process outlive this one (the demo's -keep):
	// it is not killed when its parent dies, and Close is the caller's
	// business. By default the kernel kills Azurite if this process dies
	// without calling Close.
	Detached bool
}

// Server is one running Azurite blob service.
type Server struct {
	opts    Options
	port    int
	dir     string // temp dir: log, certificate
	logPath string
	certPEM []byte
	pool    *x509.CertPool
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait returned
	waitErr error         // valid after exited is closed

	closeOnce sync.Once
}

// maxPortTries bounds restarts after losing the race for a free port
// between closing our probe listener and Azurite binding it.
const maxPortTries = 5

// Start installs Azurite if needed and starts it on a free loopback port.
// ctx bounds installation and start-up only; the server runs until Close.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.OAuth && !opts.HTTPS {
		return nil, errors.New("azurite: OAuth requires HTTPS (Azurite refuses --oauth over http)")
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = time.Minute
	}
	mainJS, err := Install(ctx, opts.InstallDir)
	if err != nil {
		return nil, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("azurite: needs node: %w", err)
	}
	var lastErr error
	for range maxPortTries {
		s, err := start(ctx, node, mainJS, opts)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, lastErr
}

var errPortTaken = errors.New("port taken")

// tempPattern names the per-server temp dirs, so sweepStale can find the
// ones a crashed process left behind.
const tempPattern = "blobfs-azurite-"

func start(ctx context.Context, node, mainJS string, opts Options) (_ *Server, err error) {
	sweepStale()
	dir, err := os.MkdirTemp("", tempPattern)
	if err != nil {
		return nil, fmt.Errorf("azurite: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, port: port, dir: dir, logPath: filepath.Join(dir, "azurite.log"), exited: make(chan struct{})}
	args := []string{mainJS,
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--inMemoryPersistence",
		// The SDK speaks a newer API version than Azurite 3.37 knows.
		"--skipApiVersionCheck",
		// Ignore headers Azurite does not implement instead of failing.
		"--loose",
		"--disableTelemetry",
	}
	if !opts.AccessLog {
		args = append(args, "--silent")
	}
	if opts.ExtentMemoryLimitMB > 0 {
		args = append(args, "--extentMemoryLimit", strconv.Itoa(opts.ExtentMemoryLimitMB))
	}
	if opts.HTTPS {
		certPEM, certPath, keyPath, err := writeSelfSigned(dir)
		if err != nil {
			return nil, err
		}
		s.certPEM = certPEM
		s.pool = x509.NewCertPool()
		s.pool.AppendCertsFromPEM(certPEM)
		args = append(args, "--cert", certPath, "--key", keyPath)
	}
	if opts.OAuth {
		args = append(args, "--oauth", "basic")
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("azurite: log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = withoutEnv(os.Environ(), "AZURITE_ACCOUNTS") // keep the well-known account and key
	// Its own process group, so Close can kill everything it spawned and
	// a terminal's Ctrl-C reaches our signal handler, not Azurite.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !opts.Detached {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("azurite: start node: %w", err)
	}
	s.cmd = cmd
	_ = os.WriteFile(filepath.Join(dir, "azurite.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.kill()
		log := s.LogTail(4096)
		if strings.Contains(log, "EADDRINUSE") {
			return nil, fmt.Errorf("azurite: port %d: %w", port, errPortTaken)
		}
		return nil, fmt.Errorf("azurite %s on port %d: %w\n--- azurite log (%s) ---\n%s", Version, port, err, s.logPath, log)
	}
	return s, nil
}

// sweepStale removes temp dirs of servers whose process is gone: a test
// binary that panicked or was killed never ran Close (the kernel killed
// its Azurite, but the log and certificate stayed).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPattern+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "azurite.pid"))
		if err != nil {
			continue // starting right now, or not ours to judge
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// freePort asks the kernel for a free loopback port. Another process can
// take it before Azurite binds; Start retries when that happens.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("azurite: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// waitReady polls until Azurite answers any HTTP response, the process
// exits, or the start timeout passes.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	client := &http.Client{Transport: s.Transport(), Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.BlobEndpoint()+"?comp=list", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited before answering: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// StartT starts a Server for a test and closes it when the test ends. It
// fails the test if Azurite cannot be installed or started: CI must run
// these tests, never skip them. On failure the log tail is reported.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start azurite: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("azurite log tail (%s):\n%s", s.logPath, s.LogTail(4096))
		}
		if err := s.Close(); err != nil {
			t.Errorf("close azurite: %v", err)
		}
	})
	return s
}

// BlobEndpoint is the service URL of the account, e.g.
// http://127.0.0.1:41234/devstoreaccount1 (no trailing slash).
func (s *Server) BlobEndpoint() string {
	scheme := "http"
	if s.opts.HTTPS {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d/%s", scheme, s.port, Account)
}

// Port is the loopback port Azurite listens on.
func (s *Server) Port() int { return s.port }

// Account is the storage account name, devstoreaccount1.
func (s *Server) Account() string { return Account }

// Key is the account's well-known shared key.
func (s *Server) Key() string { return Key }

// HTTPS reports whether the server speaks TLS.
func (s *Server) HTTPS() bool { return s.opts.HTTPS }

// CACertPEM is the PEM of the server's self-signed certificate, nil
// without HTTPS.
func (s *Server) CACertPEM() []byte { return bytes.Clone(s.certPEM) }

// CACertPool is a pool holding only the server's certificate, nil without
// HTTPS.
func (s *Server) CACertPool() *x509.CertPool {
	if s.pool == nil {
		return nil
	}
	return s.pool.Clone()
}

// Transport returns a new loopback-only transport that trusts the server's
// certificate. Each call makes a new connection pool: keep it.
func (s *Server) Transport() *http.Transport {
	tr := testenv.LoopbackTransport()
	// Go keeps only 2 idle connections per host by default; parallel
	// range reads would otherwise open a new connection per request.
	tr.MaxIdleConnsPerHost = 32
	if s.pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: s.CACertPool(), MinVersion: tls.VersionTLS12}
	}
	return tr
}

// PID is the Azurite process id (also its process group id).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// LogPath is the file that receives Azurite's output.
func (s *Server) LogPath() string { return s.logPath }

// LogTail returns up to the last n bytes of Azurite's output.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail(b, n)
}

// CreateContainer creates a container with the account key. An existing
// container is not an error.
func (s *Server) CreateContainer(ctx context.Context, name string) error {
	cred, err := container.NewSharedKeyCredential(Account, Key)
	if err != nil {
		return fmt.Errorf("azurite: create container %q: %w", name, err)
	}
	tr := s.Transport()
	defer tr.CloseIdleConnections()
	c, err := container.NewClientWithSharedKeyCredential(s.BlobEndpoint()+"/"+name, cred, &container.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: tr}},
	})
	if err != nil {
		return fmt.Errorf("azurite: create container %q: %w", name, err)
	}
	if _, err := c.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("azurite: create container %q: %w", name, err)
	}
	return nil
}

// Close kills Azurite's process group, waits for the process to exit and
// removes its temporary directory. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.kill()
		_ = os.RemoveAll(s.dir)
	})
	return nil
}

// kill sends SIGKILL to the process group and waits for the exit: data is
// in memory, so there is nothing a graceful stop would save.
func (s *Server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// Exited is closed when the Azurite process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }
