package bootstrap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// TestPrefetchInitContainerWarmsARealMount runs the worker's rendered
// init container command — the same argv, with /blobfs replaced by this
// tree's binary and /mnt/data by a read-only bind of a real kernel FUSE
// mount of a container on Azurite, as the pod's user — and then reads the
// dataset through the mount: what the init container warmed costs no blob
// reads (the GPU workers start on cached data), and what lies outside the
// rendered prefetch path still does (the path is honoured, not ignored).
func TestPrefetchInitContainerWarmsARealMount(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	bin := buildBlobfs(t)
	srv := azurite.StartT(t, azurite.Options{})
	const container = "datasets"
	if err := srv.CreateContainer(ctx, container); err != nil {
		t.Fatal(err)
	}
	tr := srv.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	store, err := azstore.New(azstore.Config{ServiceURL: srv.BlobEndpoint(), Container: container,
		Credential: azstore.SharedKey(srv.Account(), srv.Key()), Transport: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	size := testenv.Pick(3<<20+12345, 64<<20+12345) // a few cache blocks and a partial one
	files := map[string][]byte{}
	for i := range 4 {
		files[fmt.Sprintf("train/shard-%03d.bin", i)] = pattern(uint64(i), size)
	}
	files["val/shard-000.bin"] = pattern(99, 1<<20)
	for name, data := range files {
		if _, err := store.Put(ctx, name, data, blob.WriteOptions{}); err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
	}

	counter := azurite.NewCounterT(t, srv)
	base := t.TempDir()
	mnt, cacheDir, logFile := filepath.Join(base, "mnt"), filepath.Join(base, "cache"), filepath.Join(base, "blobfs.log")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(withoutAzureEnv(), "AZURE_STORAGE_ACCOUNT="+srv.Account(), "AZURE_STORAGE_ACCESS_KEY="+srv.Key())
	// --allow-other, as the CSI driver mounts: the pods run as RayUID.
	if out, err := run(bin, env, "mount", mnt, "--container", container, "--endpoint", counter.BlobEndpoint(),
		"--cache-dir", cacheDir, "--log-file", logFile, "--allow-other"); err != nil {
		t.Fatalf("blobfs mount: %v\n%s\nlog:\n%s", err, out, readTail(logFile))
	}
	t.Cleanup(func() {
		if out, err := run(bin, env, "unmount", mnt); err != nil {
			t.Errorf("blobfs unmount: %v\n%s", err, out)
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})

	// The pod sees the volume as kubelet and the container runtime give
	// it: a bind mount of the driver's mount, made read-only (checked
	// against the render below).
	podView := filepath.Join(base, "pod-data")
	if err := os.Mkdir(podView, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(mnt, podView, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(podView, 0); err != nil {
			t.Errorf("unmount %s: %v", podView, err)
			_ = unix.Unmount(podView, unix.MNT_DETACH)
		}
	})

	s := testSettings()
	s.PrefetchPath, s.PrefetchParallel = MountData+"/train", 4
	d := decodeStream(t, render(t, s))
	initc := d.workers.Spec.InitContainers[0]
	argv := append(append([]string{}, initc.Command...), initc.Args...)
	if argv[0] != "/blobfs" {
		t.Fatalf("init container runs %q, the image's binary is /blobfs", argv[0])
	}
	argv[0] = bin
	if m := findMount(initc, MountData); m == nil || !m.ReadOnly {
		t.Fatalf("init container mounts %s %v, want read-only", MountData, m)
	}
	if v := volume(d.workers.Spec, ClaimDataset); v == nil || v.PersistentVolumeClaim == nil || !v.PersistentVolumeClaim.ReadOnly {
		t.Fatalf("the workers' pod does not publish %s read-only: %v", ClaimDataset, v)
	}
	if err := unix.Mount("", podView, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	if f, err := os.OpenFile(filepath.Join(podView, ".blobfs-control"), os.O_RDWR, 0); !errors.Is(err, unix.EROFS) {
		t.Fatalf("read-write open of the control file on the pod's view: %v, want EROFS (the bind is not read-only)", err)
	} else if f != nil {
		f.Close()
	}
	// The pod's user, as the rendered security context says: the binary
	// and the bind must be reachable by it.
	psc := d.workers.Spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || psc.RunAsGroup == nil {
		t.Fatalf("the workers' pod names no user: %v", psc)
	}
	for _, dir := range []string{filepath.Dir(bin), filepath.Dir(filepath.Dir(bin)), base, filepath.Dir(base)} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range argv {
		if a == MountData || strings.HasPrefix(a, MountData+"/") {
			argv[i] = podView + strings.TrimPrefix(a, MountData)
		}
	}
	t.Logf("init container, as uid %d gid %d: %q", *psc.RunAsUser, *psc.RunAsGroup, argv)
	initEnv := []string{"PATH=/usr/bin:/bin", "HOME=/tmp"}
	if out, err := runAs(uint32(*psc.RunAsUser), uint32(*psc.RunAsGroup), argv[0], initEnv, argv[1:]...); err != nil {
		t.Fatalf("the rendered init container command failed: %v\n%s\nlog:\n%s", err, out, readTail(logFile))
	}

	// The Ray container's view: the same read-only bind.
	if m := findMount(d.workers.Spec.Containers[0], MountData); m == nil || !m.ReadOnly {
		t.Errorf("the worker container does not mount %s read-only", MountData)
	}
	counter.Reset()
	for name, want := range files {
		if !strings.HasPrefix(name, "train/") {
			continue
		}
		got, err := os.ReadFile(filepath.Join(podView, name))
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Errorf("%s: content differs through the mount", name)
		}
	}
	if c := counter.Counts(); c.Reads != 0 {
		t.Errorf("reading the warmed dataset made %d blob reads (%d bytes), want 0: %v", c.Reads, c.ReadBytes, c)
	}
	if _, err := os.ReadFile(filepath.Join(podView, "val/shard-000.bin")); err != nil {
		t.Fatal(err)
	}
	if c := counter.Counts(); c.Reads == 0 {
		t.Errorf("a file outside the prefetch path was cached too: the rendered path is not what was warmed")
	}
}

// buildBlobfs builds this tree's blobfs as `make build` does.
func buildBlobfs(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "blobfs")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(gobin, "build", "-o", bin, "./cmd/blobfs")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/blobfs: %v\n%s", err, out)
	}
	return bin
}

func run(bin string, env []string, args ...string) ([]byte, error) {
	return runCmd(nil, bin, env, args...)
}

// runAs runs bin as uid:gid with no supplementary groups.
func runAs(uid, gid uint32, bin string, env []string, args ...string) ([]byte, error) {
	return runCmd(&syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}, bin, env, args...)
}

func runCmd(attr *syscall.SysProcAttr, bin string, env []string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = attr
	cmd.Dir = "/"
	cmd.Env = env
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func withoutAzureEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZURE_") {
			env = append(env, kv)
		}
	}
	return env
}

func readTail(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// pattern returns n deterministic bytes that differ per seed.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
