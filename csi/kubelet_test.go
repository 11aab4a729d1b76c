package csi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// bindRunner is a MountRunner that stands in for `blobfs mount`: it
// checks the settings file like the real one would read it and
// bind-mounts the container's backing directory at the target.
func bindRunner(t *testing.T, backing string) MountRunner {
	return func(_ context.Context, configFile, target string) error {
		m, err := loadMountConfig(configFile)
		if err != nil {
			return err
		}
		if m.Storage.AccountKey.Reveal() != testKey {
			t.Errorf("the mount's settings lack the node-stage secret")
		}
		return unix.Mount(filepath.Join(backing, m.Storage.Container), target, "", unix.MS_BIND, "")
	}
}

// TestKubeletFlow drives the node plugin over its unix socket exactly as
// kubelet does: NodeGetInfo, NodeStageVolume, NodePublishVolume to two
// pods (one read-only), NodeUnpublishVolume twice, NodeUnstageVolume, with
// real mounts: the mount supervisor (over its own socket) bind-mounts a
// local directory where `blobfs mount` would make a FUSE mount. Nothing
// may be left in /proc/self/mountinfo.
func TestKubeletFlow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	root := t.TempDir()
	cleanupMounts(t, root)
	backing := filepath.Join(root, "blob")
	if err := os.MkdirAll(filepath.Join(backing, "datasets"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(backing, "datasets", "shard-0000.tar"), []byte("data"), 0o644)

	log, logs := testLogger()
	sup, err := NewSupervisor(SupervisorConfig{StateDir: filepath.Join(root, "plugin"), MountRoots: []string{root}, Runner: bindRunner(t, backing), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	client := serveSupervisor(t, sup, root)
	node, err := NewNode(NodeConfig{NodeID: "aks-gpu-0", Mounter: &SystemMounter{Volumes: client}, StateDir: filepath.Join(root, "plugin"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := NewIdentity("", "test", node.Probe)
	conn := startDriver(t, log, Services{Identity: id, Node: node})
	nc := csi.NewNodeClient(conn)
	ctx := context.Background()

	info, err := nc.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "aks-gpu-0" {
		t.Fatalf("NodeGetInfo = %v, %v", info, err)
	}
	if _, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{}); err != nil {
		t.Fatalf("Probe: %v", err)
	}

	kubelet := filepath.Join(root, "kubelet")
	staging := filepath.Join(kubelet, "plugins/kubernetes.io/csi", DriverName, "abc123/globalmount")
	if err := os.MkdirAll(staging, 0o750); err != nil { // kubelet creates it
		t.Fatal(err)
	}
	vc := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "-o allow_other", "--attr-timeout=60")
	attrs := map[string]string{"containerName": "datasets", "storageAccount": "mydata", "protocol": "fuse2"}
	stageReq := &csi.NodeStageVolumeRequest{
		VolumeId: "mydata_datasets", StagingTargetPath: staging, VolumeCapability: vc,
		VolumeContext: attrs, Secrets: map[string]string{SecretAccountKey: testKey},
	}
	for i := 0; i < 2; i++ {
		if _, err := nc.NodeStageVolume(ctx, stageReq); err != nil {
			t.Fatalf("NodeStageVolume #%d: %v", i+1, err)
		}
	}
	targets := []string{
		filepath.Join(kubelet, "pods/pod-a/volumes/kubernetes.io~csi/pv-data/mount"),
		filepath.Join(kubelet, "pods/pod-b/volumes/kubernetes.io~csi/pv-data/mount"),
	}
	for i, tg := range targets {
		if err := os.MkdirAll(filepath.Dir(tg), 0o750); err != nil { // kubelet creates the parent
			t.Fatal(err)
		}
		if _, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: "mydata_datasets", StagingTargetPath: staging, TargetPath: tg,
			VolumeCapability: vc, VolumeContext: attrs, Readonly: i == 1,
		}); err != nil {
			t.Fatalf("NodePublishVolume %s: %v", tg, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(targets[1], "shard-0000.tar")); err != nil || string(b) != "data" {
		t.Fatalf("read through pod-b: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(targets[0], "ckpt"), []byte("w"), 0o644); err != nil {
		t.Fatalf("write through pod-a: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(targets[1], "ckpt")); err != nil || string(b) != "w" {
		t.Errorf("pod-b does not see pod-a's write (not one shared mount?): %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(targets[1], "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write through the read-only publish: %v, want EROFS", err)
	}
	stats, err := nc.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "mydata_datasets", VolumePath: targets[0]})
	if err != nil || len(stats.GetUsage()) == 0 {
		t.Errorf("NodeGetVolumeStats = %v, %v", stats, err)
	}

	for _, tg := range targets {
		for i := 0; i < 2; i++ {
			if _, err := nc.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "mydata_datasets", TargetPath: tg}); err != nil {
				t.Fatalf("NodeUnpublishVolume %s: %v", tg, err)
			}
		}
		if _, err := os.Stat(tg); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target %s not removed", tg)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := nc.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "mydata_datasets", StagingTargetPath: staging}); err != nil {
			t.Fatalf("NodeUnstageVolume: %v", err)
		}
	}
	if mps, _ := mountPoints(root); len(mps) != 0 {
		t.Errorf("left in /proc/self/mountinfo: %v", mps)
	}
	if b, _ := os.ReadFile(filepath.Join(backing, "datasets", "ckpt")); string(b) != "w" {
		t.Errorf("the write did not reach the backing store")
	}
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("the node-stage secret is in a log")
	}
	var n int
	filepath.Walk(filepath.Join(root, "plugin"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".sock") {
			n++
			t.Logf("left in the state directory: %s", p)
		}
		return nil
	})
	if n != 0 {
		t.Errorf("%d files left in the state directory after unstage", n)
	}
}
