package containere2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/mountinfo"
	"github.com/blobfs/blobfs/internal/testenv"
)

// The harness: TestMain builds a static blobfs, starts a private dockerd,
// builds the image from deploy/Dockerfile, runs the tests and then always
// removes the containers, stops dockerd and unmounts anything left under
// its temporary directory.
var (
	engine   *dockerd
	image    string // tag of the image built from deploy/Dockerfile
	tmpRoot  string // everything the tests create on the host lives here
	setupErr error  // why the harness could not start
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		// Every test skips through testenv.RequireFUSE with the reason.
		return m.Run()
	}
	setupErr = setup()
	code := m.Run()
	if err := teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "container e2e: FAIL: teardown: %v\n", err)
		code = 1
	}
	return code
}

// requireHarness skips where FUSE mounts are impossible and fails when the
// harness could not start (a missing dockerd included: setup.sh installs it).
func requireHarness(t *testing.T) {
	t.Helper()
	testenv.RequireFUSE(t)
	if setupErr != nil {
		t.Fatalf("container e2e harness: %v", setupErr)
	}
}

func setup() error {
	var err error
	sweepStale()
	// Short: unix socket paths (dockerd's, containerd's) must stay under 108 bytes.
	if tmpRoot, err = os.MkdirTemp("", tempPrefix); err != nil {
		return err
	}
	// Our pid, so that a later run can clean up after this one if it is
	// killed before its teardown (a -timeout panic).
	if err := os.WriteFile(filepath.Join(tmpRoot, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	dockerdPath, err := exec.LookPath("dockerd")
	if err != nil {
		return fmt.Errorf("dockerd not found (scripts/setup.sh installs Debian's docker.io; run `make deps`): %w", err)
	}
	// The client that shipped with this dockerd: another docker CLI on
	// PATH (a newer one without buildx) may not build with this engine.
	cli := filepath.Join(filepath.Dir(dockerdPath), "docker")
	if _, err := os.Stat(cli); err != nil {
		if cli, err = exec.LookPath("docker"); err != nil {
			return fmt.Errorf("docker CLI not found next to %s or on PATH: %w", dockerdPath, err)
		}
	}

	// The image's inputs, exactly as deploy/Dockerfile's comment builds
	// them: a static binary (CGO_ENABLED=0, the image has no libc) and the
	// host's CA bundle, in a context holding only what the Dockerfile and
	// its .dockerignore name.
	ctxDir := filepath.Join(tmpRoot, "image")
	if err := os.MkdirAll(filepath.Join(ctxDir, "bin"), 0o755); err != nil {
		return err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(gobin, "build", "-trimpath", "-o", filepath.Join(ctxDir, "bin", "blobfs"), "./cmd/blobfs")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/blobfs: %v\n%s", err, out)
	}
	if err := copyFile("/etc/ssl/certs/ca-certificates.crt", filepath.Join(ctxDir, "bin", "ca-certificates.crt")); err != nil {
		return fmt.Errorf("CA bundle for the image (Debian's ca-certificates): %w", err)
	}
	if err := copyFile(filepath.Join(root, "deploy", "Dockerfile"), filepath.Join(ctxDir, "Dockerfile")); err != nil {
		return err
	}
	// The legacy builder reads only .dockerignore at the context root;
	// BuildKit would read deploy/Dockerfile.dockerignore. Using it here
	// checks that it lets through everything the Dockerfile copies.
	if err := copyFile(filepath.Join(root, "deploy", "Dockerfile.dockerignore"), filepath.Join(ctxDir, ".dockerignore")); err != nil {
		return err
	}

	if engine, err = startDockerd(dockerdPath, cli, filepath.Join(tmpRoot, "d")); err != nil {
		return err
	}
	image = fmt.Sprintf("blobfs-e2e:%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := engine.docker(ctx, "build", "--quiet", "-t", image, "-f", filepath.Join(ctxDir, "Dockerfile"), ctxDir); err != nil {
		return fmt.Errorf("docker build -f deploy/Dockerfile: %v\n%s", err, out)
	}
	return nil
}

func teardown() error {
	var errs []error
	if engine != nil {
		errs = append(errs, engine.stop())
	}
	if tmpRoot == "" {
		return errors.Join(errs...)
	}
	// Whatever a test left mounted (a failed test, a container killed
	// mid-way): detach it, deepest first, so the directory can go.
	for _, m := range mountinfo.FUSEUnder(tmpRoot) {
		errs = append(errs, fmt.Errorf("FUSE mount left behind: %s", m.Point))
	}
	left := mountsUnder(tmpRoot)
	for i := len(left) - 1; i >= 0; i-- {
		unix.Unmount(left[i], unix.MNT_DETACH)
	}
	if rest := mountsUnder(tmpRoot); len(rest) > 0 {
		return errors.Join(append(errs, fmt.Errorf("not removing %s: still mounted: %v", tmpRoot, rest))...)
	}
	errs = append(errs, os.RemoveAll(tmpRoot))
	return errors.Join(errs...)
}

// tempPrefix names the harness's directories under os.TempDir().
const tempPrefix = "blobfs-ctr-"

// sweepStale removes what a killed earlier run left: its FUSE mounts (dead
// daemons answer ENOTCONN), dockerd's namespace mounts, and its files. A
// -timeout panic skips teardown; dockerd then gets SIGTERM (its parent-death
// signal) and stops the containers, but their mounts stay on the host.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue // starting right now
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || pid <= 0 || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue // still running
		}
		left := mountsUnder(d)
		for i := len(left) - 1; i >= 0; i-- {
			unix.Unmount(left[i], unix.MNT_DETACH)
		}
		if len(mountsUnder(d)) == 0 {
			os.RemoveAll(d)
		}
	}
}

// dockerd is a private Docker engine: its own data root, exec root, socket
// and managed containerd, no bridge network and no iptables rules, so it
// neither touches nor depends on any other engine on the machine.
type dockerd struct {
	dir    string
	cli    string
	env    []string
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

func startDockerd(dockerdPath, cli, dir string) (*dockerd, error) {
	for _, sub := range []string{"data", "exec", "config"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	// An empty daemon.json: nothing from /etc/docker applies.
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "docker.sock")
	d := &dockerd{
		dir: dir, cli: cli, exited: make(chan struct{}), log: filepath.Join(dir, "dockerd.log"),
		env: append(os.Environ(),
			"DOCKER_HOST=unix://"+sock,
			"DOCKER_CONFIG="+filepath.Join(dir, "config"), // not ~/.docker
			"DOCKER_BUILDKIT=0",                           // Debian's docker.io has no buildx; the legacy builder is enough for FROM scratch
			"DOCKER_CLI_HINTS=false"),
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	d.cmd = exec.Command(dockerdPath,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--host", "unix://"+sock,
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--config-file", filepath.Join(dir, "daemon.json"),
		// No bridge, no NAT, no iptables: containers here use the host
		// network (Azurite is on loopback) and the machine's firewall
		// stays untouched.
		"--bridge=none", "--iptables=false", "--ip-masq=false", "--userland-proxy=false",
		// vfs works on any filesystem (overlay-on-overlay does not); the
		// image is two files, so copying layers costs nothing.
		"--storage-driver=vfs",
		"--log-level=warn")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group (dockerd and its containerd), and SIGTERM if
	// the test binary dies without tearing down (a -timeout panic). The
	// death signal follows the thread that started it, so that thread
	// stays locked until dockerd exits.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := d.cmd.Start(); err != nil {
			started <- err
			close(d.exited)
			return
		}
		started <- nil
		d.cmd.Wait()
		logf.Close()
		close(d.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start dockerd: %w", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := d.docker(ctx, "version", "--format", "{{.Server.Version}}")
		cancel()
		if err == nil {
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("dockerd exited before serving:\n%s", d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("dockerd not ready after 90s: %v\n%s", err, d.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// docker runs the CLI against this engine and returns its combined output.
func (d *dockerd) docker(ctx context.Context, args ...string) (string, error) {
	return d.dockerEnv(ctx, nil, args...)
}

// dockerEnv is docker with extra environment for the CLI: `docker run -e
// NAME` (no value) passes NAME from there into the container, which keeps
// credentials out of every argv.
func (d *dockerd) dockerEnv(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.cli, args...)
	cmd.Env = append(append([]string(nil), d.env...), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out.String()), err
}

// stop removes every container and stops the engine (and its containerd).
func (d *dockerd) stop() error {
	select {
	case <-d.exited:
		return nil
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	if ids, err := d.docker(ctx, "ps", "-aq"); err == nil && ids != "" {
		if out, err := d.docker(ctx, append([]string{"rm", "-f"}, strings.Fields(ids)...)...); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s", err, out))
		}
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		errs = append(errs, errors.New("dockerd ignored SIGTERM for 60s; killed"))
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
	}
	// The managed containerd and shims are dockerd's children; make sure
	// none outlives it.
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	return errors.Join(errs...)
}

func (d *dockerd) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// container is one running container started by a test.
type container struct {
	name string
}

// run starts a detached container of the blobfs image with what FUSE
// mounts need (CAP_SYS_ADMIN and /dev/fuse; the chart asks for privileged,
// which docker cannot grant on these VMs), the host network, and the given
// docker options and blobfs arguments. The container is removed when the
// test ends; its log is shown if the test failed.
func run(t *testing.T, name string, env, opts []string, args ...string) *container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := []string{"run", "--detach", "--name", name,
		"--cap-add", "SYS_ADMIN", "--device", "/dev/fuse",
		"--network", "host",
		// Docker's default AppArmor profile (where the kernel has
		// AppArmor) denies mount(2) even with CAP_SYS_ADMIN; the chart's
		// containers are privileged, which runs them unconfined.
		"--security-opt", "apparmor=unconfined",
		// blobfs is PID 1 and reaps the mount processes re-parented to it;
		// no init in between, as in the chart.
		"--init=false"}
	full = append(full, opts...)
	full = append(full, image)
	full = append(full, args...)
	if out, err := engine.dockerEnv(ctx, env, full...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	c := &container{name: name}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container %s log:\n%s", name, c.logs())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		engine.docker(ctx, "rm", "--force", name)
	})
	return c
}

func (c *container) logs() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := engine.docker(ctx, "logs", "--tail", "200", c.name)
	if err != nil {
		return fmt.Sprintf("(docker logs: %v) %s", err, out)
	}
	return out
}

// state returns the container's status ("running", "exited", ...) and exit code.
func (c *container) state(t *testing.T) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := engine.docker(ctx, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", c.name)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var status string
	var code int
	if _, err := fmt.Sscanf(out, "%s %d", &status, &code); err != nil {
		t.Fatalf("docker inspect %s: %q: %v", c.name, out, err)
	}
	return status, code
}

// stop sends SIGTERM (docker stop) and waits up to grace for the container
// to exit, then returns its exit code.
func (c *container) stop(t *testing.T, grace time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), grace+time.Minute)
	defer cancel()
	if out, err := engine.docker(ctx, "stop", "--time", fmt.Sprint(int(grace.Seconds())), c.name); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	status, code := c.state(t)
	if status != "exited" {
		t.Fatalf("container %s is %s after docker stop", c.name, status)
	}
	return code
}

// restart stops the container with SIGTERM (after grace, SIGKILL) and
// starts it again: same container, same mounts and arguments.
func (c *container) restart(t *testing.T, grace time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), grace+time.Minute)
	defer cancel()
	if out, err := engine.docker(ctx, "restart", "--time", fmt.Sprint(int(grace.Seconds())), c.name); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// remove kills the container (SIGKILL, as an OOM kill or a crash would)
// and removes it.
func (c *container) remove(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := engine.docker(ctx, "rm", "--force", c.name); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// waitFor polls cond until it holds, failing the test after timeout or as
// soon as the container stops running.
func waitFor(t *testing.T, c *container, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if status, code := c.state(t); status != "running" {
			t.Fatalf("waiting for %s: container %s is %s (exit %d):\n%s", what, c.name, status, code, c.logs())
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v:\n%s", what, timeout, c.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sharedDir makes dir a mount point with shared propagation (a bind mount
// of itself), as kubelet's directory is on a node: mounts made below it
// inside a container with rshared propagation appear on the host, and
// the host's appear in the container. The bind is detached at cleanup,
// after everything under it; a FUSE mount still there is a test failure.
func sharedDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() {
		left := mountsUnder(dir)
		for _, m := range mountinfo.FUSEUnder(dir) {
			t.Errorf("FUSE mount left behind under %s: %s", dir, m.Point)
		}
		for i := len(left) - 1; i >= 0; i-- {
			unix.Unmount(left[i], unix.MNT_DETACH)
		}
	})
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", dir, err)
	}
}

// mountsUnder lists the mount points at or below root, in table order.
func mountsUnder(root string) []string {
	ms, _ := mountinfo.Read()
	var out []string
	for _, m := range ms {
		if m.Point == root || strings.HasPrefix(m.Point, root+"/") {
			out = append(out, m.Point)
		}
	}
	return out
}

// isFUSEMount reports whether path is a FUSE mount point in the host's table.
func isFUSEMount(path string) bool {
	for _, m := range mountinfo.FUSEUnder(path) {
		if m.Point == path {
			return true
		}
	}
	return false
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
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
