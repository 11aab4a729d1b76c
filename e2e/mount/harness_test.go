package mounte2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/mountinfo"
	"github.com/blobfs/blobfs/internal/testenv"
)

// The harness: TestMain builds bin once, starts one Azurite, and every
// test gets its own container and its own directories under tmpRoot. At
// the end no FUSE mount may remain under tmpRoot.
var (
	blobfsBin    string          // the binary under test
	az           *azurite.Server // shared by every test; one container per test
	tmpRoot      string          // mountpoints, cache dirs and logs of every test
	setupErr     error           // why the harness could not start, if it could not
	reaper       bool            // we are a child subreaper: daemons' exit codes reach us
	containerSeq atomic.Int64
)

// cmdTimeout bounds one blobfs command (mount waits for readiness, which
// the daemon bounds at 2 minutes itself).
const cmdTimeout = 3 * time.Minute

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if _, err := os.Stat("/dev/fuse"); err == nil && os.Geteuid() == 0 {
		setupErr = setup()
	}
	code := m.Run()
	if tmpRoot != "" {
		left := fuseMountsUnder(tmpRoot)
		for _, mi := range left {
			fmt.Fprintf(os.Stderr, "e2e: FAIL: FUSE mount left behind after the tests: %s (%s)\n", mi.Point, mi.FSType)
			forceUnmount(mi)
			code = 1
		}
		if len(fuseMountsUnder(tmpRoot)) == 0 {
			os.RemoveAll(tmpRoot)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: not removing %s: mounts remain\n", tmpRoot)
		}
	}
	if az != nil {
		az.Close()
	}
	return code
}

func setup() error {
	var err error
	// World-traversable: the uid 1000 test reaches its mount through it.
	if tmpRoot, err = os.MkdirTemp("", "blobfs-e2e-"); err != nil {
		return err
	}
	if err := os.Chmod(tmpRoot, 0o755); err != nil {
		return err
	}
	// Daemons are re-parented to us when the `blobfs mount` that started
	// them exits, so unmount can check that they exit, and with what.
	reaper = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == nil

	blobfsBin = filepath.Join(tmpRoot, "blobfs")
	// go test puts its own GOROOT/bin first in PATH; a bare shell on
	// these machines may lack /usr/local/go/bin.
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	args := []string{"build", "-o", blobfsBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command(gobin, append(args, "./cmd/blobfs")...)
	if build.Dir, err = moduleRoot(); err != nil {
		return err
	}
	if !raceEnabled {
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // as `make build` does
	}
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/blobfs: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if az, err = azurite.Start(ctx, azurite.Options{}); err != nil {
		return err
	}
	return nil
}

// requireHarness skips without FUSE (testenv.RequireFUSE) and fails when
// the harness could not start: CI has FUSE, so there these tests run.
func requireHarness(t *testing.T) {
	t.Helper()
	testenv.RequireFUSE(t)
	if setupErr != nil {
		t.Fatalf("e2e harness: %v", setupErr)
	}
	if az == nil {
		t.Fatal("e2e harness did not start")
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// moduleRoot is the directory holding go.mod, above the test's directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// skipBug skips a test that shows a known bug, unless BLOBFS_E2E_BUGS=1.
// The test stays written as it should pass, so fixing the bug means
// deleting the skipBug call.
func skipBug(t *testing.T, bug string) {
	t.Helper()
	if os.Getenv("BLOBFS_E2E_BUGS") != "1" {
		t.Skip("known bug, skipped (BLOBFS_E2E_BUGS=1 runs it): " + bug)
	}
}

// --- containers and the store --------------------------------------------

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// newContainer creates a fresh container named after the test.
func newContainer(t *testing.T) string {
	t.Helper()
	return newContainerOn(t, az)
}

// newContainerOn creates a fresh container on srv.
func newContainerOn(t *testing.T, srv *azurite.Server) string {
	t.Helper()
	base := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	suffix := fmt.Sprintf("-%d", containerSeq.Add(1))
	if len(base) > 63-len(suffix) {
		base = strings.TrimRight(base[:63-len(suffix)], "-")
	}
	name := base + suffix
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.CreateContainer(ctx, name); err != nil {
		t.Fatal(err)
	}
	return name
}

// newStore opens container directly (not through a mount), to seed data
// and to check what the mount wrote.
func newStore(t *testing.T, container string) blob.Store {
	t.Helper()
	return newStoreOn(t, az, container)
}

// newStoreOn opens container on srv.
func newStoreOn(t *testing.T, srv *azurite.Server, container string) blob.Store {
	t.Helper()
	tr := srv.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	s, err := azstore.New(azstore.Config{
		ServiceURL: srv.BlobEndpoint(),
		Container:  container,
		Credential: azstore.SharedKey(srv.Account(), srv.Key()),
		Transport:  &http.Client{Transport: tr},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// putFiles writes every name's bytes as a blob.
func putFiles(t *testing.T, s blob.Store, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		putBlob(t, s, name, data, nil)
	}
}

func putBlob(t *testing.T, s blob.Store, name string, data []byte, md map[string]string) blob.Attrs {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := s.Put(ctx, name, data, blob.WriteOptions{Metadata: md})
	if err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	return a
}

func putDirMarker(t *testing.T, s blob.Store, name string) {
	t.Helper()
	putBlob(t, s, name, nil, map[string]string{blob.MetaIsFolder: "true"})
}

// readBlob reads a whole blob through the store.
func readBlob(t *testing.T, s blob.Store, name string) (blob.Attrs, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := s.Stat(ctx, name)
	if err != nil {
		t.Fatalf("stat blob %s: %v", name, err)
	}
	buf := make([]byte, a.Size)
	if a.Size > 0 {
		n, err := s.ReadAt(ctx, name, a.ETag, buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("read blob %s: %v", name, err)
		}
		buf = buf[:n]
	}
	return a, buf
}

// pseudoRandom is n deterministic bytes for seed.
func pseudoRandom(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seedKey(seed)).Read(b)
	return b
}

// randomStream is an endless deterministic stream for seed.
func randomStream(seed uint64) io.Reader { return rand.NewChaCha8(seedKey(seed)) }

func seedKey(seed uint64) [32]byte {
	var k [32]byte
	for i := range 8 {
		k[i] = byte(seed >> (8 * i))
	}
	return k
}

// --- running blobfs ------------------------------------------------------

// result is a finished blobfs command.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// blobfsEnv is the environment users give blobfs: the process's own, with
// every AZURE_ variable replaced by the account and key.
func blobfsEnv(key string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZURE_") {
			env = append(env, kv)
		}
	}
	return append(env, "AZURE_STORAGE_ACCOUNT="+azurite.Account, "AZURE_STORAGE_ACCESS_KEY="+key)
}

// runBlobfs runs the binary to completion (a daemonizing mount returns
// once the daemon is ready).
func runBlobfs(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
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
	if ctx.Err() != nil {
		t.Fatalf("blobfs %s did not finish within %v\n%s", strings.Join(args, " "), cmdTimeout, r)
	}
	return r
}

// testDir makes a fresh world-readable directory for the test under
// tmpRoot. It is removed at the end of the test unless something is still
// mounted below it.
func testDir(t *testing.T, what string) string {
	t.Helper()
	name := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 60 {
		name = name[:60]
	}
	d, err := os.MkdirTemp(tmpRoot, name+"-"+what+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if len(fuseMountsUnder(d)) == 0 {
			os.RemoveAll(d)
		}
	})
	return d
}

// mount is one mounted blobfs daemon.
type mount struct {
	Dir       string // the mountpoint
	CacheDir  string
	LogFile   string
	Container string
	PID       int // the daemon's pid, from the mount command's "daemon pid N"
	env       []string
}

// mountConfig says how to mount; zero values mean the harness's Azurite,
// its key, and no extra flags.
type mountConfig struct {
	Endpoint string
	Key      string
	Args     []string // extra flags
}

var daemonPID = regexp.MustCompile(`daemon pid (\d+)`)

// mountArgs is the mount command line, credentials excluded.
func mountArgs(dir, container, endpoint, cacheDir, logFile string, extra ...string) []string {
	args := []string{"mount", dir, "--container", container, "--endpoint", endpoint, "--cache-dir", cacheDir}
	if logFile != "" {
		args = append(args, "--log-file", logFile)
	}
	return append(args, extra...)
}

// mountT mounts container with the real binary in daemon mode (the
// default) and unmounts it when the test ends.
func mountT(t *testing.T, container string, cfg mountConfig) *mount {
	t.Helper()
	if cfg.Endpoint == "" {
		cfg.Endpoint = az.BlobEndpoint()
	}
	if cfg.Key == "" {
		cfg.Key = az.Key()
	}
	base := testDir(t, "mount")
	m := &mount{
		Dir:       filepath.Join(base, "mnt"),
		CacheDir:  filepath.Join(base, "cache"),
		LogFile:   filepath.Join(base, "blobfs.log"),
		Container: container,
		env:       blobfsEnv(cfg.Key),
	}
	if err := os.Mkdir(m.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := runBlobfs(t, m.env, mountArgs(m.Dir, container, cfg.Endpoint, m.CacheDir, m.LogFile, cfg.Args...)...)
	if r.code != 0 {
		t.Fatalf("blobfs mount: %s\nlog:\n%s", r, readFile(m.LogFile))
	}
	if sm := daemonPID.FindStringSubmatch(r.stdout); sm != nil {
		m.PID, _ = strconv.Atoi(sm[1])
	} else {
		t.Errorf("blobfs mount printed no daemon pid: %q", r.stdout)
	}
	t.Cleanup(func() { m.unmount(t) })
	if _, ok := findMount(m.Dir); !ok {
		t.Fatalf("blobfs mount returned 0 but %s is not in /proc/self/mountinfo\n%s", m.Dir, r)
	}
	return m
}

// Path joins the mountpoint and a name inside the mount.
func (m *mount) Path(name ...string) string {
	return filepath.Join(append([]string{m.Dir}, name...)...)
}

// unmount runs `blobfs unmount`, checks that the daemon exits 0 and that
// no mount is left, and falls back to umount -l and aborting the FUSE
// connection so that nothing outlives the test, whatever happened.
func (m *mount) unmount(t *testing.T) {
	t.Helper()
	mi, mounted := findMount(m.Dir)
	if !mounted {
		return
	}
	r := runBlobfs(t, m.env, "unmount", m.Dir)
	if r.code != 0 {
		t.Errorf("blobfs unmount %s: %s", m.Dir, r)
		if out, err := exec.Command("umount", "-l", m.Dir).CombinedOutput(); err != nil {
			t.Logf("umount -l %s: %v %s", m.Dir, err, out)
		}
	}
	if m.PID > 0 {
		code, exited := waitExit(m.PID, time.Minute)
		switch {
		case !exited:
			t.Errorf("daemon pid %d still running a minute after unmount; aborting its FUSE connection\nlog:\n%s", m.PID, tail(readFile(m.LogFile), 4000))
			abortConnection(mi)
			if _, exited := waitExit(m.PID, 10*time.Second); !exited {
				_ = syscall.Kill(m.PID, syscall.SIGKILL)
				waitExit(m.PID, 10*time.Second)
			}
		case code != 0:
			t.Errorf("daemon pid %d exited with %d after unmount\nlog:\n%s", m.PID, code, tail(readFile(m.LogFile), 4000))
		}
	}
	if mi, ok := findMount(m.Dir); ok {
		t.Errorf("%s is still mounted after unmount", m.Dir)
		forceUnmount(mi)
	}
	if t.Failed() {
		t.Logf("daemon log %s:\n%s", m.LogFile, tail(readFile(m.LogFile), 4000))
	}
}

// waitExit waits up to d for pid to exit. With the subreaper set it
// reaps the daemon and returns its exit code; otherwise it only sees that
// the process is gone (or a zombie) and reports 0.
func waitExit(pid int, d time.Duration) (code int, exited bool) {
	deadline := time.Now().Add(d)
	for {
		if reaper {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			switch {
			case got == pid:
				if ws.Signaled() {
					return 128 + int(ws.Signal()), true
				}
				return ws.ExitStatus(), true
			case errors.Is(err, unix.ECHILD):
				if !processAlive(pid) {
					return 0, true
				}
			}
		} else if !processAlive(pid) {
			return 0, true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// processesWithArg lists live processes whose argv contains arg exactly.
func processesWithArg(arg string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg && processAlive(pid) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// --- mountinfo -----------------------------------------------------------

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo = mountinfo.Mount

func mounts() []mountInfo {
	ms, _ := mountinfo.Read()
	return ms
}

// findMount returns the mount at dir, if any.
func findMount(dir string) (mountInfo, bool) {
	var found mountInfo
	ok := false
	for _, mi := range mounts() {
		if mi.Point == dir {
			found, ok = mi, true // the last one is on top
		}
	}
	return found, ok
}

// mountCount is how many mounts are stacked at dir.
func mountCount(dir string) int {
	n := 0
	for _, mi := range mounts() {
		if mi.Point == dir {
			n++
		}
	}
	return n
}

// fuseMountsUnder lists the FUSE mounts at or below root.
func fuseMountsUnder(root string) []mountInfo { return mountinfo.FUSEUnder(root) }

// abortConnection aborts a FUSE connection: every pending and future
// request fails with ENOTCONN, so a hung reader comes back.
func abortConnection(mi mountInfo) {
	_, minor, ok := strings.Cut(mi.Dev, ":")
	if !ok || mi.Dev == "" || !strings.HasPrefix(mi.Dev, "0:") {
		return
	}
	_ = os.WriteFile("/sys/fs/fuse/connections/"+minor+"/abort", []byte("1"), 0)
}

// forceUnmount is the last resort: lazy unmount, then abort.
func forceUnmount(mi mountInfo) {
	_ = exec.Command("umount", "-l", mi.Point).Run()
	abortConnection(mi)
}

// --- small helpers ---------------------------------------------------------

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

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// parallelDo runs fn(i) for i in [0, n) on workers goroutines and returns
// the first error.
func parallelDo(n, workers int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// withTimeout runs fn in a goroutine and fails the test if it has not
// returned within d: a hung FUSE request must fail the test, not the
// whole run. The goroutine is abandoned; cleanup aborts the connection.
func withTimeout(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %v (a hang)", what, d)
	}
}
