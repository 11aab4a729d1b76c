// Package csie2e drives the real blobfs CSI driver exactly as Kubernetes
// does: the controller, the node plugin and the mount supervisor run as
// separate `blobfs csi` processes, reached over their unix sockets with
// gRPC, mounting real FUSE filesystems on Azurite.
package csie2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/mountinfo"
	"github.com/blobfs/blobfs/internal/testenv"
)

var bin string // the blobfs binary built from this tree

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "blobfs-csi-e2e-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "blobfs")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/blobfs/blobfs/cmd/blobfs")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building blobfs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer is a process's output, written by exec's copier and read
// by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is one `blobfs csi` process.
type proc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

// startCSI starts `blobfs csi ARGS` and returns once its socket accepts
// connections (a killed predecessor may have left the socket file behind).
func startCSI(t *testing.T, socket string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"csi", "--log-level", "debug"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Its own process group, as a container would be, so killing it
	// cannot take the test with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.kill(syscall.SIGTERM) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%v exited before serving:\n%s", args, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: socket %s never accepted a connection:\n%s", args, socket, p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
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

// fuseMountsUnder lists the FUSE mount points at or below dir.
func fuseMountsUnder(dir string) []string {
	var out []string
	for _, m := range mountinfo.FUSEUnder(dir) {
		out = append(out, m.Point)
	}
	return out
}

func TestKubeletFlowSurvivesPluginRestart(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv := azurite.StartT(t, azurite.Options{})
	root := t.TempDir()
	state := filepath.Join(root, "state")
	kubelet := filepath.Join(root, "kubelet")
	os.MkdirAll(kubelet, 0o750)
	t.Cleanup(func() {
		// Whatever happened, leave nothing mounted.
		for _, mp := range fuseMountsUnder(root) {
			syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	})
	mounterSock := filepath.Join(state, "mounter.sock")
	common := []string{"--state-dir", state, "--kubelet-dir", kubelet, "--mounter-endpoint", "unix://" + mounterSock}
	startCSI(t, mounterSock, append([]string{"--mode", "mounter", "--cache-dir", filepath.Join(root, "cache")}, common...)...)
	nodeSock := filepath.Join(root, "node.sock")
	nodeArgs := append([]string{"--mode", "node", "--node-id", "aks-gpu-0", "--endpoint", "unix://" + nodeSock, "--allow-custom-endpoints"}, common...)
	node := startCSI(t, nodeSock, nodeArgs...)
	ctrlSock := filepath.Join(root, "ctrl.sock")
	startCSI(t, ctrlSock, "--mode", "controller", "--endpoint", "unix://"+ctrlSock, "--storage-account", srv.Account(),
		"--blob-endpoint", srv.BlobEndpoint(), "--allow-custom-endpoints", "--state-dir", state)

	secrets := map[string]string{"azurestorageaccountname": srv.Account(), "azurestorageaccountkey": srv.Key()}
	rwx := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: []string{"-o allow_other"}}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
	cc := csi.NewControllerClient(dial(t, ctrlSock))
	cv, err := cc.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: "pvc-0123", VolumeCapabilities: []*csi.VolumeCapability{rwx}, Secrets: secrets,
		Parameters: map[string]string{"storageAccount": srv.Account(), "endpoint": srv.BlobEndpoint(), "protocol": "fuse2"},
	})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	vol := cv.GetVolume()
	t.Logf("volume %s, context %v", vol.GetVolumeId(), vol.GetVolumeContext())
	admin, err := azstore.NewContainers(azstore.Config{ServiceURL: srv.BlobEndpoint(),
		Credential: azstore.SharedKey(srv.Account(), srv.Key()), Transport: &http.Client{Transport: srv.Transport()}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := admin.Exists(ctx, "pvc-0123"); err != nil || !ok {
		t.Fatalf("CreateVolume did not create container pvc-0123: %v, %v", ok, err)
	}

	nc := csi.NewNodeClient(dial(t, nodeSock))
	staging := filepath.Join(kubelet, "plugins/kubernetes.io/csi/blobfs.csi.azure.io/h/globalmount")
	os.MkdirAll(staging, 0o750)
	if _, err := nc.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: vol.GetVolumeId(), StagingTargetPath: staging, VolumeCapability: rwx,
		VolumeContext: vol.GetVolumeContext(), Secrets: secrets,
	}); err != nil {
		t.Fatalf("NodeStageVolume: %v\n%s", err, node.out)
	}
	targets := []string{filepath.Join(kubelet, "pods/a/volumes/kubernetes.io~csi/pv/mount"), filepath.Join(kubelet, "pods/b/volumes/kubernetes.io~csi/pv/mount")}
	for _, tg := range targets {
		os.MkdirAll(filepath.Dir(tg), 0o750)
		if _, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: vol.GetVolumeId(), StagingTargetPath: staging, TargetPath: tg,
			VolumeCapability: rwx, VolumeContext: vol.GetVolumeContext(),
		}); err != nil {
			t.Fatalf("NodePublishVolume %s: %v", tg, err)
		}
	}
	payload := []byte("checkpoint step 100\n")
	if err := os.WriteFile(filepath.Join(targets[0], "ckpt.txt"), payload, 0o644); err != nil {
		t.Fatalf("write in pod a: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(targets[1], "ckpt.txt")); err != nil || !bytes.Equal(b, payload) {
		t.Fatalf("read in pod b = %q, %v", b, err)
	}

	// The node plugin crashes and is restarted (an upgrade, an OOM kill):
	// the FUSE daemons belong to the mounter, so pods keep reading.
	node.kill(syscall.SIGKILL)
	node = startCSI(t, nodeSock, nodeArgs...)
	nc = csi.NewNodeClient(dial(t, nodeSock))
	for _, tg := range targets {
		if b, err := os.ReadFile(filepath.Join(tg, "ckpt.txt")); err != nil || !bytes.Equal(b, payload) {
			t.Fatalf("after the plugin restart, read in %s = %q, %v", tg, b, err)
		}
	}
	// The restarted plugin still knows the volume: a republish (kubelet
	// does this with requiresRepublish) succeeds and changes nothing.
	if _, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: vol.GetVolumeId(), StagingTargetPath: staging, TargetPath: targets[0],
		VolumeCapability: rwx, VolumeContext: vol.GetVolumeContext(),
	}); err != nil {
		t.Fatalf("republish after restart: %v\n%s", err, node.out)
	}

	for _, tg := range targets {
		if _, err := nc.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: tg}); err != nil {
			t.Fatalf("NodeUnpublishVolume: %v", err)
		}
	}
	if _, err := nc.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume: %v", err)
	}
	// The FUSE daemon exits after its unmount; give it a moment to go.
	deadline := time.Now().Add(30 * time.Second)
	for len(fuseMountsUnder(root)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := fuseMountsUnder(root); len(left) > 0 {
		t.Fatalf("still mounted after unstage: %v", left)
	}
	// The data is in Blob, and the driver deletes the container it created.
	if _, err := cc.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolumeId(), Secrets: secrets}); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if ok, err := admin.Exists(ctx, "pvc-0123"); err != nil || ok {
		t.Fatalf("DeleteVolume left the container it created: %v, %v", ok, err)
	}
	// Bad requests get the right codes from the real process.
	_, err = nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "blobfs#a#b#..#x", TargetPath: targets[0], VolumeCapability: rwx})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("publish of a malformed volume id: %v, want InvalidArgument", err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("flow timed out")
	}
}
