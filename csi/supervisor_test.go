package csi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/blobfs/blobfs/internal/config"
	"github.com/blobfs/blobfs/internal/testenv"
)

// Environment of the FUSE helper process: a loopback FUSE server standing
// in for a `blobfs mount` daemon, so a test can kill it and see what a
// dead blobfs process leaves behind.
const (
	helperSrcEnv = "BLOBFS_CSI_TEST_FUSE_SRC"
	helperMntEnv = "BLOBFS_CSI_TEST_FUSE_MNT"
)

func TestMain(m *testing.M) {
	if src := os.Getenv(helperSrcEnv); src != "" {
		fuseHelper(src, os.Getenv(helperMntEnv))
		return
	}
	os.Exit(m.Run())
}

// fuseHelper serves a loopback of src at mnt until killed.
func fuseHelper(src, mnt string) {
	root, err := fs.NewLoopbackRoot(src)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	srv, err := fs.Mount(mnt, root, &fs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true, FsName: "csitest", Name: "csitest", AllowOther: true,
	}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	srv.Wait()
}

// helpers tracks FUSE helper processes so a test can kill them.
type helpers struct {
	mu    sync.Mutex
	procs map[string]*exec.Cmd // GUARDED_BY(mu), by mount point
}

// runner is a MountRunner that serves the container's backing directory
// through a FUSE helper process, like `blobfs mount` does with a daemon.
func (h *helpers) runner(backing func(config.Mount) string) MountRunner {
	return func(ctx context.Context, configFile, target string) error {
		m, err := loadMountConfig(configFile)
		if err != nil {
			return err
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperSrcEnv+"="+backing(m), helperMntEnv+"="+target)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return fmt.Errorf("fuse helper: %q", line)
		}
		h.mu.Lock()
		h.procs[target] = cmd
		h.mu.Unlock()
		return nil
	}
}

// kill kills the helper serving target, as an OOM kill or a container
// restart kills a blobfs process.
func (h *helpers) kill(t *testing.T, target string) {
	t.Helper()
	h.mu.Lock()
	cmd := h.procs[target]
	delete(h.procs, target)
	h.mu.Unlock()
	if cmd == nil {
		t.Fatalf("no helper for %s", target)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func (h *helpers) killAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, cmd := range h.procs {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// loadMountConfig reads a mount's config file the way `blobfs mount
// --config-file` does.
func loadMountConfig(path string) (config.Mount, error) {
	var m config.Mount
	_, err := config.Load(&m, nil, config.LoadOptions{ConfigFile: path, Getenv: func(string) (string, bool) { return "", false }})
	return m, err
}

// cleanupMounts detaches whatever a failed test left mounted under dir.
func cleanupMounts(t *testing.T, dir string) {
	t.Cleanup(func() {
		mps, _ := mountPoints(dir)
		for i := len(mps) - 1; i >= 0; i-- {
			_ = unix.Unmount(mps[i], unix.MNT_DETACH)
		}
	})
}

// TestMountConfigRoundTrip: the file the supervisor writes is read back
// by config.Load exactly, secrets included, although config.Secret
// redacts itself when marshalled.
func TestMountConfigRoundTrip(t *testing.T) {
	m := baseMount()
	m.Storage.Account, m.Storage.Container, m.Storage.Subdirectory = "mydata", "datasets", "train/x"
	m.Storage.AuthMode = config.AuthKey
	m.Storage.AccountKey = "a2V5LXdpdGgtc3BlY2lhbCs9Lw=="
	m.Storage.SAS = "sv=2022-11-02&sig=abc%2Bdef"
	m.FS.UID, m.FS.GID, m.FS.Umask, m.FS.ReadOnly = 1000, 2000, 0o027, true
	m.FS.NegativeTTL = 1500 * time.Millisecond
	m.Cache.BlockSizeMB, m.Cache.DiskSizeMB = 16, 100000
	y, err := marshalMountConfig(m)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(y), "REDACTED") {
		t.Fatalf("config file holds redacted secrets:\n%s", y)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := writeFileAtomic(path, y); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v", st.Mode().Perm())
	}
	got, err := loadMountConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != m {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
	}
}

func newTestSupervisor(t *testing.T, root string, run MountRunner) (*Supervisor, *syncBuffer) {
	t.Helper()
	log, logs := testLogger()
	s, err := NewSupervisor(SupervisorConfig{
		StateDir: filepath.Join(root, "state"), CacheDir: filepath.Join(root, "cache"),
		MountRoots: []string{root}, Runner: run, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}

// serveSupervisor serves s on a socket and returns a client.
func serveSupervisor(t *testing.T, s *Supervisor, dir string) *SupervisorClient {
	t.Helper()
	sock := filepath.Join(dir, "mounter.sock")
	lis, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("supervisor Serve: %v", err)
		}
	})
	c, err := NewSupervisorClient("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSupervisorOverSocket: mount, retry, conflict, unmount through the
// socket, with a real FUSE server process per mount; the settings file is
// 0600 and holds the secret, the log never does.
func TestSupervisorOverSocket(t *testing.T) {
	testenv.RequireFUSE(t)
	root := t.TempDir()
	cleanupMounts(t, root)
	backing := filepath.Join(root, "backing")
	if err := os.MkdirAll(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(backing, "hello.txt"), []byte("hi"), 0o644)
	h := &helpers{procs: map[string]*exec.Cmd{}}
	t.Cleanup(h.killAll)
	sup, logs := newTestSupervisor(t, root, h.runner(func(config.Mount) string { return backing }))
	client := serveSupervisor(t, sup, root)
	ctx := context.Background()
	if err := client.Probe(ctx); err != nil {
		t.Fatalf("Probe: %v", err)
	}

	target := filepath.Join(root, "staging")
	spec := MountSpec{VolumeID: testVolume, Config: baseMount()}
	spec.Config.Storage.Account, spec.Config.Storage.Container, spec.Config.Storage.AuthMode = "mydata", "datasets", config.AuthKey
	spec.Config.Storage.AccountKey = testKey
	if err := client.Mount(ctx, target, spec); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "hello.txt")); err != nil || string(b) != "hi" {
		t.Fatalf("read through the mount: %q, %v", b, err)
	}
	cfgFile := filepath.Join(sup.mountDir(target), "config.yaml")
	if st, err := os.Stat(cfgFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, %v", st, err)
	}
	got, err := loadMountConfig(cfgFile)
	if err != nil || got.Storage.AccountKey.Reveal() != testKey || got.Cache.Dir != filepath.Join(root, "cache") {
		t.Fatalf("config file = %+v, %v", got.Storage, err)
	}
	// A retry with the same settings (a rotated key is the same mount).
	spec.Config.Storage.AccountKey = testKey + "rotated"
	if err := client.Mount(ctx, target, spec); err != nil {
		t.Fatalf("retried Mount: %v", err)
	}
	if got, _ := loadMountConfig(cfgFile); got.Storage.AccountKey.Reveal() != testKey+"rotated" {
		t.Errorf("stored key not refreshed")
	}
	other := spec
	other.Config.FS.ReadOnly = true
	wantCode(t, client.Mount(ctx, target, other), codes.FailedPrecondition)
	wantCode(t, client.Mount(ctx, "/etc", spec), codes.InvalidArgument)

	if err := client.Unmount(ctx, target); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if err := client.Unmount(ctx, target); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	if st, _ := pathState(target); st != NotMounted {
		t.Errorf("target is %v after unmount", st)
	}
	if _, err := os.Stat(cfgFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("settings (with the secret) left after unmount: %v", err)
	}
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("secret in the supervisor's log")
	}
}

// TestStaleMountRepair: a real FUSE server dies; the mount answers
// ENOTCONN and pathState says Stale; a restarted supervisor remounts it
// from its stored settings; a node publish finds a stale staging mount and
// repairs it before binding.
func TestStaleMountRepair(t *testing.T) {
	testenv.RequireFUSE(t)
	root := t.TempDir()
	cleanupMounts(t, root)
	backing := filepath.Join(root, "backing")
	os.MkdirAll(backing, 0o755)
	os.WriteFile(filepath.Join(backing, "ckpt.bin"), []byte("weights"), 0o644)
	h := &helpers{procs: map[string]*exec.Cmd{}}
	t.Cleanup(h.killAll)
	run := h.runner(func(config.Mount) string { return backing })
	sup, _ := newTestSupervisor(t, root, run)
	ctx := context.Background()
	target := filepath.Join(root, "staging")
	spec := MountSpec{VolumeID: testVolume, Config: baseMount()}
	spec.Config.Storage.Account, spec.Config.Storage.Container, spec.Config.Storage.AuthMode = "mydata", "datasets", config.AuthMSI
	if err := sup.Mount(ctx, target, spec); err != nil {
		t.Fatal(err)
	}

	h.kill(t, target)
	_, err := os.Stat(filepath.Join(target, "ckpt.bin"))
	if !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat after the server died: %v, want ENOTCONN", err)
	}
	if st, err := pathState(target); err != nil || st != Stale {
		t.Fatalf("pathState = %v, %v; want stale", st, err)
	}

	// The mounter container restarts: a new supervisor repairs at start-up.
	sup2, _ := newTestSupervisor(t, root, run)
	sup2.Recover(ctx)
	if b, err := os.ReadFile(filepath.Join(target, "ckpt.bin")); err != nil || string(b) != "weights" {
		t.Fatalf("after recovery: %q, %v", b, err)
	}

	// Dies again; this time a publish repairs it, through the node.
	h.kill(t, target)
	node := newTestNode(t, &SystemMounter{Volumes: sup2}, nil)
	if err := node.state.writeStage(stageRecord{VolumeID: testVolume, StagingPath: target}); err != nil {
		t.Fatal(err)
	}
	pod := filepath.Join(root, "pod")
	if err := publish(ctx, node, target, pod, rwx, true, nil); err != nil {
		t.Fatalf("publish over a stale staging mount: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(pod, "ckpt.bin")); err != nil || string(b) != "weights" {
		t.Fatalf("through the pod's bind: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(pod, "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write through a read-only publish: %v, want EROFS", err)
	}

	// The pod's bind goes stale with the server; unpublish detaches it.
	h.kill(t, target)
	if st, _ := pathState(pod); st != Stale {
		t.Errorf("pod target is %v, want stale", st)
	}
	unpublish(t, node, pod)
	if _, err := node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: testVolume, StagingTargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if mps, _ := mountPoints(root); len(mps) != 0 {
		t.Errorf("left mounted: %v", mps)
	}
}
