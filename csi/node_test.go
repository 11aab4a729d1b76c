package csi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/blobfs/blobfs/internal/config"
)

const testKey = "dGVzdC1hY2NvdW50LWtleS1zZWNyZXQ=" // never to appear in logs or errors

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var rwx = mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)

const testVolume = "blobfs#mydata#datasets"

func keySecret() map[string]string { return map[string]string{SecretAccountKey: testKey} }

// stage stages testVolume at a fresh staging path and returns it.
func stage(t *testing.T, n *Node, attrs map[string]string, vc *csi.VolumeCapability) string {
	t.Helper()
	staging := filepath.Join(t.TempDir(), "globalmount")
	if err := os.Mkdir(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	_, err := n.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{
		VolumeId: testVolume, StagingTargetPath: staging, VolumeCapability: vc,
		VolumeContext: attrs, Secrets: keySecret(),
	})
	if err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	return staging
}

func publish(ctx context.Context, n *Node, staging, target string, vc *csi.VolumeCapability, ro bool, attrs map[string]string) error {
	_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: testVolume, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: vc, Readonly: ro, VolumeContext: attrs,
	})
	return err
}

func unpublish(t *testing.T, n *Node, target string) {
	t.Helper()
	if _, err := n.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: testVolume, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume %s: %v", target, err)
	}
}

// TestNodeSharesOneMountPerVolume: one blobfs mount at staging, one bind
// per pod, read-only where asked; every step idempotent.
func TestNodeSharesOneMountPerVolume(t *testing.T) {
	ctx := context.Background()
	fm := newFakeMounter()
	log, logs := testLogger()
	n := newTestNode(t, fm, log)
	staging := stage(t, n, map[string]string{AttrBlockSizeMB: "16"}, rwx)
	stage(t, n, nil, rwx) // another staging path for the same volume: kubelet never does this, but it must not break the first
	m, ok := fm.get(staging)
	if !ok || !m.volume {
		t.Fatalf("no blobfs mount at the staging path")
	}
	c := m.spec.Config
	if c.Storage.Account != "mydata" || c.Storage.Container != "datasets" || c.Storage.AuthMode != config.AuthKey ||
		c.Storage.AccountKey.Reveal() != testKey || c.Cache.BlockSizeMB != 16 || !c.FS.AllowOther {
		t.Errorf("mount settings = %+v", c.Storage)
	}

	pods := t.TempDir()
	t1, t2 := filepath.Join(pods, "pod1", "mount"), filepath.Join(pods, "pod2", "mount")
	for i := 0; i < 2; i++ { // the second round is kubelet retrying
		if err := publish(ctx, n, staging, t1, rwx, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := publish(ctx, n, staging, t2, rwx, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	for target, ro := range map[string]bool{t1: false, t2: true} {
		b, ok := fm.get(target)
		if !ok || b.volume || b.source != staging || b.readOnly != ro {
			t.Errorf("%s: %+v, want a bind of %s read-only=%v", target, b, staging, ro)
		}
	}
	if got := fm.count("mount"); got != 2 {
		t.Errorf("%d blobfs mounts made, want 2 (one per staging path)", got)
	}
	if got := fm.count("bind"); got != 2 {
		t.Errorf("%d binds, want 2: a republish of the same target must not bind again", got)
	}
	// Same target, other read-only setting: ALREADY_EXISTS.
	wantCode(t, publish(ctx, n, staging, t1, rwx, true, nil), codes.AlreadyExists)

	unpublish(t, n, t1)
	unpublish(t, n, t1) // idempotent
	unpublish(t, n, t2)
	for _, tg := range []string{t1, t2} {
		if _, err := os.Stat(tg); !os.IsNotExist(err) {
			t.Errorf("target %s not removed: %v", tg, err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: testVolume, StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := fm.get(staging); ok {
		t.Errorf("staging still mounted after unstage")
	}
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("account key in the log")
	}
}

// TestNodePublishNeedsStage: publishing a volume that is not staged is
// FAILED_PRECONDITION, not a bind of an empty directory.
func TestNodePublishNeedsStage(t *testing.T) {
	n := newTestNode(t, newFakeMounter(), nil)
	staging := t.TempDir()
	err := publish(context.Background(), n, staging, filepath.Join(t.TempDir(), "t"), rwx, false, nil)
	wantCode(t, err, codes.FailedPrecondition)
}

func podContext(ns, sa, token string) map[string]string {
	return map[string]string{
		AttrWorkloadIdentityTokens: "true",
		AttrClientID:               "11111111-2222-3333-4444-555555555555",
		ctxPodNamespace:            ns,
		ctxServiceAccount:          sa,
		k8sPrefix + "pod.name":     "p",
		ctxTokens:                  `{"api://AzureADTokenExchange":{"token":"` + token + `","expirationTimestamp":"2030-01-01T00:00:00Z"}}`,
	}
}

// TestPerPodIdentity: the token arrives at publish; the mount is keyed by
// identity and shared by pods with the same one; every republish rewrites
// the 0600 token file and reuses the mount.
func TestPerPodIdentity(t *testing.T) {
	ctx := context.Background()
	fm := newFakeMounter()
	log, logs := testLogger()
	n := newTestNode(t, fm, log)
	staging := t.TempDir()
	attrs := podContext("ray", "trainer", "token-one")
	if _, err := n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: testVolume, StagingTargetPath: staging, VolumeCapability: rwx, VolumeContext: attrs,
	}); err != nil {
		t.Fatalf("stage: %v", err)
	}
	if fm.volumeMounts() != 0 {
		t.Fatalf("stage mounted something; the token only comes with publish")
	}
	pods := t.TempDir()
	t1 := filepath.Join(pods, "pod1")
	if err := publish(ctx, n, staging, t1, rwx, false, attrs); err != nil {
		t.Fatalf("publish: %v", err)
	}
	b, _ := fm.get(t1)
	src, ok := fm.get(b.source)
	if !ok || !src.volume {
		t.Fatalf("target is not bound to an identity mount: %+v", b)
	}
	s := src.spec.Config.Storage
	if s.AuthMode != config.AuthWorkloadIdentity || s.ClientID != "11111111-2222-3333-4444-555555555555" || s.TenantID == "" || s.TokenFile == "" {
		t.Fatalf("identity mount storage settings = %+v", s)
	}
	checkToken := func(want string) {
		t.Helper()
		got, err := os.ReadFile(s.TokenFile)
		if err != nil || string(got) != want {
			t.Fatalf("token file = %q, %v; want %q", got, err, want)
		}
		st, _ := os.Stat(s.TokenFile)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
		}
		dst, _ := os.Stat(filepath.Dir(s.TokenFile))
		if dst.Mode().Perm() != 0o700 {
			t.Errorf("token directory mode %v, want 0700", dst.Mode().Perm())
		}
	}
	checkToken("token-one")

	// kubelet's periodic republish with a fresh token.
	if err := publish(ctx, n, staging, t1, rwx, false, podContext("ray", "trainer", "token-two")); err != nil {
		t.Fatalf("republish: %v", err)
	}
	checkToken("token-two")
	if fm.count("mount") != 1 {
		t.Errorf("republish made a new mount (%d mounts)", fm.count("mount"))
	}

	// A second pod with the same identity shares the mount.
	t2 := filepath.Join(pods, "pod2")
	if err := publish(ctx, n, staging, t2, rwx, true, podContext("ray", "trainer", "token-three")); err != nil {
		t.Fatal(err)
	}
	if b2, _ := fm.get(t2); b2.source != b.source {
		t.Errorf("same identity got another mount: %s vs %s", b2.source, b.source)
	}
	checkToken("token-three")
	// Another service account never shares it.
	t3 := filepath.Join(pods, "pod3")
	if err := publish(ctx, n, staging, t3, rwx, false, podContext("ray", "other", "token-x")); err != nil {
		t.Fatal(err)
	}
	if b3, _ := fm.get(t3); b3.source == b.source {
		t.Errorf("a different identity shares the mount")
	}
	if fm.volumeMounts() != 2 {
		t.Errorf("%d identity mounts, want 2", fm.volumeMounts())
	}

	unpublish(t, n, t1)
	if _, ok := fm.get(b.source); !ok {
		t.Fatalf("identity mount gone while pod2 still uses it")
	}
	unpublish(t, n, t2)
	unpublish(t, n, t3)
	if fm.volumeMounts() != 0 {
		t.Errorf("identity mounts left after the last unpublish")
	}
	if _, err := os.Stat(s.TokenFile); !os.IsNotExist(err) {
		t.Errorf("token file left behind: %v", err)
	}
	if _, err := n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: testVolume, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"token-one", "token-two", "token-three", "token-x"} {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("token %q in the log", tok)
		}
	}
}

// TestRepairStale: a staging mount whose server died is remounted from
// its stored settings by the next publish; a stale target is detached and
// bound again; a stale identity mount is remounted.
func TestRepairStale(t *testing.T) {
	ctx := context.Background()
	fm := newFakeMounter()
	n := newTestNode(t, fm, nil)
	staging := stage(t, n, nil, rwx)
	target := filepath.Join(t.TempDir(), "pod")

	fm.setStale(staging)
	if err := publish(ctx, n, staging, target, rwx, false, nil); err != nil {
		t.Fatalf("publish over a stale staging mount: %v", err)
	}
	if fm.count("remount") != 1 {
		t.Errorf("stale staging mount not repaired (calls: %v)", fm.calls)
	}

	fm.setStale(target)
	if err := publish(ctx, n, staging, target, rwx, false, nil); err != nil {
		t.Fatalf("publish over a stale target: %v", err)
	}
	if fm.count("unbind") != 1 || fm.count("bind") != 2 {
		t.Errorf("stale target not rebound (calls: %v)", fm.calls)
	}

	// Stale while staging again: unmount, mount.
	fm.setStale(staging)
	stageAgain := &csi.NodeStageVolumeRequest{VolumeId: testVolume, StagingTargetPath: staging, VolumeCapability: rwx, Secrets: keySecret()}
	if _, err := n.NodeStageVolume(ctx, stageAgain); err != nil {
		t.Fatal(err)
	}
	if m, _ := fm.get(staging); m.stale {
		t.Errorf("stage left the stale mount")
	}

	// Per-pod identity mount.
	attrs := podContext("ns", "sa", "tok")
	pt := filepath.Join(t.TempDir(), "wi")
	if err := publish(ctx, n, staging, pt, rwx, false, attrs); err != nil {
		t.Fatal(err)
	}
	b, _ := fm.get(pt)
	fm.setStale(b.source)
	fm.setStale(pt)
	if err := publish(ctx, n, staging, pt, rwx, false, attrs); err != nil {
		t.Fatalf("republish over a stale identity mount: %v", err)
	}
	if m, _ := fm.get(b.source); m.stale {
		t.Errorf("identity mount not repaired")
	}
	if m, _ := fm.get(pt); m.stale {
		t.Errorf("target not rebound")
	}
}

// TestVolumeLockAborted: a second call for a volume that is being worked
// on is ABORTED at once.
func TestVolumeLockAborted(t *testing.T) {
	fm := newFakeMounter()
	entered, proceed := make(chan struct{}), make(chan struct{})
	staging := t.TempDir()
	var once sync.Once
	fm.beforeMount = func(target string) {
		if target != staging {
			return
		}
		once.Do(func() {
			close(entered)
			<-proceed
		})
	}
	n := newTestNode(t, fm, nil)
	req := &csi.NodeStageVolumeRequest{VolumeId: testVolume, StagingTargetPath: staging, VolumeCapability: rwx, Secrets: keySecret()}
	first := make(chan error, 1)
	go func() {
		_, err := n.NodeStageVolume(context.Background(), req)
		first <- err
	}()
	<-entered
	_, err := n.NodeStageVolume(context.Background(), req)
	wantCode(t, err, codes.Aborted)
	_, err = n.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: testVolume, TargetPath: "/x/y"})
	wantCode(t, err, codes.Aborted)
	// Another volume is not held up.
	other := &csi.NodeStageVolumeRequest{VolumeId: "blobfs#mydata#other", StagingTargetPath: t.TempDir(), VolumeCapability: rwx, Secrets: keySecret()}
	if _, err := n.NodeStageVolume(context.Background(), other); err != nil {
		t.Errorf("other volume: %v", err)
	}
	close(proceed)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if _, err := n.NodeStageVolume(context.Background(), req); err != nil {
		t.Errorf("after the first call finished: %v", err)
	}
}

// TestSingleWriter: SINGLE_NODE_SINGLE_WRITER volumes publish at one
// target only.
func TestSingleWriter(t *testing.T) {
	ctx := context.Background()
	n := newTestNode(t, newFakeMounter(), nil)
	vc := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)
	staging := stage(t, n, nil, vc)
	dir := t.TempDir()
	if err := publish(ctx, n, staging, filepath.Join(dir, "a"), vc, false, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, publish(ctx, n, staging, filepath.Join(dir, "b"), vc, false, nil), codes.FailedPrecondition)
	unpublish(t, n, filepath.Join(dir, "a"))
	if err := publish(ctx, n, staging, filepath.Join(dir, "b"), vc, false, nil); err != nil {
		t.Errorf("after unpublish: %v", err)
	}
}

// TestFSGroup: kubelet's delegated fsGroup becomes the mount's gid with
// group read/write; an explicit gid wins; pods of another fsGroup cannot
// share the staged mount.
func TestFSGroup(t *testing.T) {
	ctx := context.Background()
	fm := newFakeMounter()
	n := newTestNode(t, fm, nil)
	withGroup := func(g string, flags ...string) *csi.VolumeCapability {
		vc := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, flags...)
		vc.GetMount().VolumeMountGroup = g
		return vc
	}
	staging := stage(t, n, map[string]string{AttrUmask: "0027", AttrUID: "1000"}, withGroup("2000"))
	m, _ := fm.get(staging)
	if fs := m.spec.Config.FS; fs.GID != 2000 || fs.UID != 1000 || fs.Umask != 0o007 {
		t.Errorf("FS settings = uid %d gid %d umask %#o; want 1000 2000 0007", fs.UID, fs.GID, fs.Umask)
	}
	dir := t.TempDir()
	if err := publish(ctx, n, staging, filepath.Join(dir, "a"), withGroup("2000"), false, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, publish(ctx, n, staging, filepath.Join(dir, "b"), withGroup("3000"), false, nil), codes.FailedPrecondition)

	// An explicit gid mount option wins over fsGroup.
	n2 := newTestNode(t, fm, nil)
	staging2 := stage(t, n2, nil, withGroup("2000", "-o gid=500"))
	if m, _ := fm.get(staging2); m.spec.Config.FS.GID != 500 {
		t.Errorf("gid = %d, want the explicit 500", m.spec.Config.FS.GID)
	}
}

// TestNodeRecover: after a restart the node drops records of targets that
// are gone and unmounts identity mounts no target uses.
func TestNodeRecover(t *testing.T) {
	ctx := context.Background()
	fm := newFakeMounter()
	state := t.TempDir()
	mk := func() *Node {
		n, err := NewNode(NodeConfig{NodeID: "n", Mounter: fm, StateDir: state, TenantID: "t1"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := mk()
	target := filepath.Join(t.TempDir(), "pod")
	if err := publish(ctx, n, t.TempDir(), target, rwx, false, podContext("ns", "sa", "tok")); err != nil {
		t.Fatal(err)
	}
	b, _ := fm.get(target)
	// The pod's target vanished while the plugin was down.
	if err := fm.Unbind(ctx, target); err != nil {
		t.Fatal(err)
	}
	mk().Recover(ctx)
	if _, ok := fm.get(b.source); ok {
		t.Errorf("unused identity mount survived recovery")
	}
	recs, _ := n.state.targets(testVolume)
	if len(recs) != 0 {
		t.Errorf("target records left: %+v", recs)
	}
}

func TestNodeInfoAndCapabilities(t *testing.T) {
	n := newTestNode(t, newFakeMounter(), nil)
	info, err := n.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "node-1" {
		t.Fatalf("NodeGetInfo = %v, %v", info, err)
	}
	caps, _ := n.NodeGetCapabilities(context.Background(), &csi.NodeGetCapabilitiesRequest{})
	have := map[csi.NodeServiceCapability_RPC_Type]bool{}
	for _, c := range caps.GetCapabilities() {
		have[c.GetRpc().GetType()] = true
	}
	for _, want := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME, csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP, csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		if !have[want] {
			t.Errorf("missing capability %v", want)
		}
	}
	dir := t.TempDir()
	st, err := n.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: testVolume, VolumePath: dir})
	if err != nil || len(st.GetUsage()) != 2 || st.GetUsage()[0].GetTotal() <= 0 {
		t.Errorf("NodeGetVolumeStats = %v, %v", st, err)
	}
}
