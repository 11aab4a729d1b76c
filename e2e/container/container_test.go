package containere2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/mountinfo"
	"github.com/blobfs/blobfs/internal/testenv"
)

// TestMountInContainer runs `blobfs mount` as PID 1 of a container of the
// image, with CAP_SYS_ADMIN and /dev/fuse only and the node cache
// bind-mounted from the host: the FUSE mount made inside the container
// reaches the host through shared propagation, the host reads and writes
// through it, and `docker stop` (SIGTERM) unmounts it on the host too.
func TestMountInContainer(t *testing.T) {
	requireHarness(t)
	srv := azurite.StartT(t, azurite.Options{})
	const name = "in-container"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := srv.CreateContainer(ctx, name); err != nil {
		t.Fatal(err)
	}
	store := openStore(t, srv, name)
	small := []byte("hello from blob storage\n")
	big := make([]byte, testenv.Pick(4<<20, 64<<20))
	rand.Read(big)
	put(t, store, "hello.txt", small)
	put(t, store, "shards/shard-00000.bin", big)

	base := shortTempDir(t)
	shared := filepath.Join(base, "shared")
	sharedDir(t, shared)
	mp := filepath.Join(shared, "data")
	cache := filepath.Join(base, "cache")
	for _, d := range []string{mp, cache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := run(t, "blobfs-mount", []string{"AZURE_STORAGE_ACCESS_KEY=" + srv.Key()},
		[]string{
			"--volume", shared + ":" + shared + ":rshared",
			"--volume", cache + ":/var/cache/blobfs",
			"--env", "AZURE_STORAGE_ACCESS_KEY", // from the CLI's environment, not argv
		},
		"mount", mp, "--foreground", "--account", srv.Account(), "--container", name,
		"--endpoint", srv.BlobEndpoint(), "--cache-dir", "/var/cache/blobfs", "--log-level", "debug")
	waitFor(t, c, "the container's FUSE mount on the host at "+mp, 2*time.Minute, func() bool { return isFUSEMount(mp) })

	// The host reads what is in Blob through the container's mount.
	if b, err := os.ReadFile(filepath.Join(mp, "hello.txt")); err != nil || !bytes.Equal(b, small) {
		t.Fatalf("host read of hello.txt = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "shards/shard-00000.bin")); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("host read of shards/shard-00000.bin: %d bytes, %v; want the %d seeded bytes", len(b), err, len(big))
	}
	// ... and writes: durable in Blob once close returns.
	written := []byte("written on the host through the container's mount\n")
	if err := os.WriteFile(filepath.Join(mp, "from-host.txt"), written, 0o644); err != nil {
		t.Fatalf("host write: %v", err)
	}
	if b := get(t, store, "from-host.txt"); !bytes.Equal(b, written) {
		t.Fatalf("blob from-host.txt = %q, want %q", b, written)
	}
	// The block cache the container filled is the host directory.
	if n := regularFiles(t, cache); n == 0 {
		t.Fatalf("the bind-mounted cache dir %s holds no files after reading %d bytes", cache, len(big))
	}

	// SIGTERM to PID 1: blobfs unmounts, and the unmount propagates.
	if code := c.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("blobfs mount exited %d after docker stop:\n%s", code, c.logs())
	}
	if isFUSEMount(mp) {
		t.Fatalf("%s is still a FUSE mount on the host after the container stopped", mp)
	}
	if entries, err := os.ReadDir(mp); err != nil || len(entries) != 0 {
		t.Fatalf("after the container stopped, %s (the bare directory) = %v, %v; want empty", mp, entries, err)
	}
}

// TestNodePluginInContainerSurvivesRestart runs the node DaemonSet's two
// blobfs containers as the chart does — `csi --mode mounter` owning the
// FUSE daemons and `csi --mode node` serving CSI — with kubelet's
// directory shared between host and containers, and drives NodeStage and
// NodePublish from the host over the node plugin's socket, as kubelet does.
// The node plugin container is then killed and replaced, and restarted
// gracefully: the published mounts keep serving on the host throughout,
// and the new plugin unpublishes and unstages them.
func TestNodePluginInContainerSurvivesRestart(t *testing.T) {
	requireHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pod := startNodePod(t, ctx, "survive")
	mounter, node, nc := pod.mounter, pod.node, pod.nc
	store, staging, targets := pod.store, pod.staging, pod.targets
	volumeID, volCtx, rwx := pod.volumeID, pod.volCtx, pod.rwx
	kubelet, nodeSock, nodeArgs, kubeletVol := pod.kubelet, pod.nodeSock, pod.nodeArgs, pod.kubeletVol
	readEach := func(when, file string, want []byte) {
		t.Helper()
		for _, tg := range targets {
			if b, err := os.ReadFile(filepath.Join(tg, file)); err != nil || !bytes.Equal(b, want) {
				t.Fatalf("%s: read %s in %s = %q, %v; want %q", when, file, tg, b, err, want)
			}
		}
	}
	seeded := pod.seeded
	readEach("after publish", "ckpt/step-100/model.safetensors", seeded)
	step200 := []byte("step 200 weights, written by pod a\n")
	if err := os.WriteFile(filepath.Join(targets[0], "step-200.txt"), step200, 0o644); err != nil {
		t.Fatalf("write in pod a: %v", err)
	}
	readEach("after a write in pod a", "step-200.txt", step200)

	// The node plugin dies (SIGKILL: an OOM kill, a crash, an upgrade) and
	// its container is gone: the mounter owns the FUSE daemons, so the
	// pods keep reading and writing.
	node.remove(t)
	readEach("with no node plugin running", "step-200.txt", step200)
	step300 := []byte("step 300 weights, written while the node plugin was down\n")
	if err := os.WriteFile(filepath.Join(targets[1], "step-300.txt"), step300, 0o644); err != nil {
		t.Fatalf("write in pod b with no node plugin: %v", err)
	}

	// A new node plugin container (kubelet restarts it) takes over from its
	// state directory.
	node = run(t, "survive-node-2", nil, kubeletVol, nodeArgs...)
	waitFor(t, node, "the restarted node plugin's socket", time.Minute, func() bool { return accepts(nodeSock) })
	nc = csi.NewNodeClient(dial(t, nodeSock))
	readEach("after the node plugin restart", "step-300.txt", step300)
	// kubelet republishes (requiresRepublish): idempotent, mounts unchanged.
	if _, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: staging, TargetPath: targets[0], VolumeCapability: rwx, VolumeContext: volCtx,
	}); err != nil {
		t.Fatalf("republish after the restart: %v", err)
	}
	readEach("after the republish", "ckpt/step-100/model.safetensors", seeded)

	// A graceful restart too (SIGTERM, as kubelet stops a container that
	// fails its liveness probe): the plugin leaves the mounts alone on exit.
	node.restart(t, 30*time.Second)
	waitFor(t, node, "the node plugin's socket after docker restart", time.Minute, func() bool { return accepts(nodeSock) })
	nc = csi.NewNodeClient(dial(t, nodeSock))
	readEach("after docker restart of the node plugin", "step-200.txt", step200)
	if got := get(t, store, "step-300.txt"); !bytes.Equal(got, step300) {
		t.Fatalf("blob step-300.txt = %q, want %q", got, step300)
	}

	// The restarted plugin tears down what its predecessor set up.
	for _, tg := range targets {
		if _, err := nc.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: tg}); err != nil {
			t.Fatalf("NodeUnpublishVolume %s: %v", tg, err)
		}
	}
	if _, err := nc.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(mountinfo.FUSEUnder(kubelet)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := mountinfo.FUSEUnder(kubelet); len(left) > 0 {
		t.Fatalf("FUSE mounts left on the host after unpublish and unstage: %v", left)
	}
	for _, c := range []*container{node, mounter} {
		if code := c.stop(t, 30*time.Second); code != 0 {
			t.Errorf("%s exited %d after docker stop:\n%s", c.name, code, c.logs())
		}
	}
}

// TestMounterContainerRestartRemounts restarts the mounter container (the
// whole node pod is restarted on an upgrade or a drain): its FUSE daemons
// die with it, and at start-up it must remount the staged volume from its
// state directory, as deploy/README.md promises.
func TestMounterContainerRestartRemounts(t *testing.T) {
	requireHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pod := startNodePod(t, ctx, "remount")
	pod.mounter.restart(t, 30*time.Second)
	waitFor(t, pod.mounter, "the restarted mounter's socket", time.Minute, func() bool { return accepts(filepath.Join(pod.state, "mounter.sock")) })
	// The staged volume reads again once Recover has run (the socket
	// listens before it runs, so allow it time).
	want := pod.seeded
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(filepath.Join(pod.staging, "ckpt/step-100/model.safetensors"))
		if err == nil && bytes.Equal(b, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the mounter restart, the staged volume reads %q, %v; want %q", b, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The pods' bind mounts still point at the dead connection; kubelet's
	// periodic republish (requiresRepublish) binds them again.
	for _, tg := range pod.targets {
		if _, err := pod.nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: pod.volumeID, StagingTargetPath: pod.staging, TargetPath: tg, VolumeCapability: pod.rwx, VolumeContext: pod.volCtx,
		}); err != nil {
			t.Fatalf("republish %s after the mounter restart: %v", tg, err)
		}
		if b, err := os.ReadFile(filepath.Join(tg, "ckpt/step-100/model.safetensors")); err != nil || !bytes.Equal(b, want) {
			t.Errorf("after republish %s reads %q, %v; want %q", tg, b, err, want)
		}
	}
	for _, tg := range pod.targets {
		if _, err := pod.nc.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: pod.volumeID, TargetPath: tg}); err != nil {
			t.Fatalf("NodeUnpublishVolume %s: %v", tg, err)
		}
	}
	if _, err := pod.nc.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: pod.volumeID, StagingTargetPath: pod.staging}); err != nil {
		t.Fatalf("NodeUnstageVolume: %v", err)
	}
}

// nodePod is the node DaemonSet's pod as containers on this host: the
// mounter and the node plugin, kubelet's directory shared with the host,
// and one static volume staged and published to two pods' targets.
type nodePod struct {
	store                   blob.Store
	seeded                  []byte // ckpt/step-100/model.safetensors
	kubelet, state, staging string
	targets                 []string
	nodeSock                string
	nodeArgs, kubeletVol    []string
	mounter, node           *container
	nc                      csi.NodeClient
	volumeID                string
	volCtx                  map[string]string
	rwx                     *csi.VolumeCapability
}

// startNodePod starts the mounter and node plugin containers (named after
// prefix), and stages and publishes a volume over a fresh Azurite
// container from the host, as kubelet does.
func startNodePod(t *testing.T, ctx context.Context, prefix string) *nodePod {
	t.Helper()
	srv := azurite.StartT(t, azurite.Options{})
	name := prefix + "-volume"
	if err := srv.CreateContainer(ctx, name); err != nil {
		t.Fatal(err)
	}
	p := &nodePod{store: openStore(t, srv, name), seeded: []byte("step 100 weights\n")}
	put(t, p.store, "ckpt/step-100/model.safetensors", p.seeded)

	base := shortTempDir(t)
	p.kubelet = filepath.Join(base, "kubelet")
	sharedDir(t, p.kubelet)
	// The chart's state directory, under kubelet's. The chart also mounts it
	// on its own; here the kubelet mount already carries it, and a second
	// bind inside the shared kubelet mount would propagate to the host.
	p.state = filepath.Join(p.kubelet, "plugins", "blobfs.csi.azure.io")
	cache := filepath.Join(base, "cache")
	for _, d := range []string{p.state, cache} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	p.nodeSock = filepath.Join(p.state, "csi.sock")
	mounterEndpoint := "unix://" + filepath.Join(p.state, "mounter.sock")
	p.kubeletVol = []string{"--volume", p.kubelet + ":" + p.kubelet + ":rshared"}
	p.mounter = run(t, prefix+"-mounter", nil,
		append(append([]string(nil), p.kubeletVol...), "--volume", cache+":"+cache),
		"csi", "--mode=mounter", "--mounter-endpoint="+mounterEndpoint, "--state-dir="+p.state,
		"--cache-dir="+cache, "--kubelet-dir="+p.kubelet, "--log-level=debug")
	waitFor(t, p.mounter, "the mounter's socket", time.Minute, func() bool { return accepts(filepath.Join(p.state, "mounter.sock")) })
	p.nodeArgs = []string{"csi", "--mode=node", "--endpoint=unix://" + p.nodeSock, "--node-id=aks-gpu-0",
		"--mounter-endpoint=" + mounterEndpoint, "--state-dir=" + p.state, "--kubelet-dir=" + p.kubelet,
		"--allow-custom-endpoints", "--log-level=debug"}
	p.node = run(t, prefix+"-node-1", nil, p.kubeletVol, p.nodeArgs...)
	waitFor(t, p.node, "the node plugin's socket", time.Minute, func() bool { return accepts(p.nodeSock) })
	p.nc = csi.NewNodeClient(dial(t, p.nodeSock))
	info, err := p.nc.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "aks-gpu-0" {
		t.Fatalf("NodeGetInfo from the container = %v, %v", info, err)
	}

	// A static PV over the container, with blob-csi-driver's node-stage secret.
	p.volumeID = "blobfs#" + srv.Account() + "#" + name
	p.volCtx = map[string]string{"endpoint": srv.BlobEndpoint()}
	secrets := map[string]string{"azurestorageaccountname": srv.Account(), "azurestorageaccountkey": srv.Key()}
	p.rwx = &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
	p.staging = filepath.Join(p.kubelet, "plugins/kubernetes.io/csi/blobfs.csi.azure.io/0a1b2c/globalmount")
	p.targets = []string{
		filepath.Join(p.kubelet, "pods/pod-a/volumes/kubernetes.io~csi/pv-data/mount"),
		filepath.Join(p.kubelet, "pods/pod-b/volumes/kubernetes.io~csi/pv-data/mount"),
	}
	if err := os.MkdirAll(p.staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := p.nc.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: p.volumeID, StagingTargetPath: p.staging, VolumeCapability: p.rwx, VolumeContext: p.volCtx, Secrets: secrets,
	}); err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	for _, tg := range p.targets {
		if err := os.MkdirAll(filepath.Dir(tg), 0o750); err != nil {
			t.Fatal(err)
		}
		if _, err := p.nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: p.volumeID, StagingTargetPath: p.staging, TargetPath: tg, VolumeCapability: p.rwx, VolumeContext: p.volCtx,
		}); err != nil {
			t.Fatalf("NodePublishVolume %s: %v", tg, err)
		}
	}
	// The containers' mounts are the host's: kubelet and the pods see them.
	for _, mp := range append([]string{p.staging}, p.targets...) {
		if !isFUSEMount(mp) {
			t.Fatalf("%s is not a FUSE mount on the host after stage/publish; host FUSE mounts: %v", mp, mountinfo.FUSEUnder(p.kubelet))
		}
	}
	return p
}

func openStore(t *testing.T, srv *azurite.Server, container string) blob.Store {
	t.Helper()
	tr := srv.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	s, err := azstore.New(azstore.Config{
		ServiceURL: srv.BlobEndpoint(), Container: container,
		Credential: azstore.SharedKey(srv.Account(), srv.Key()),
		Transport:  &http.Client{Transport: tr},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s blob.Store, name string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := s.Put(ctx, name, data, blob.WriteOptions{}); err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
}

// get reads a whole blob straight from the store, not through a mount.
func get(t *testing.T, s blob.Store, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := s.Stat(ctx, name)
	if err != nil {
		t.Fatalf("stat blob %s: %v", name, err)
	}
	b := make([]byte, a.Size)
	// io.ReaderAt semantics: a full read may come with io.EOF.
	if n, err := s.ReadAt(ctx, name, a.ETag, b, 0); n != len(b) || (err != nil && !errors.Is(err, io.EOF)) {
		t.Fatalf("read blob %s: %d of %d bytes, %v", name, n, len(b), err)
	}
	return b
}

// shortTempDir is a per-test directory under the harness's short root:
// t.TempDir's long names push socket paths past the 108-byte limit of
// unix socket addresses.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(tmpRoot, "t")
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after the containers are gone
	// and the mounts under dir detached.
	t.Cleanup(func() {
		if len(mountsUnder(dir)) == 0 {
			os.RemoveAll(dir)
		}
	})
	return dir
}

func regularFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// accepts reports whether a unix socket accepts connections (a killed
// predecessor may have left the file behind).
func accepts(socket string) bool {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
