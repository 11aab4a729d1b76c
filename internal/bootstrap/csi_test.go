package bootstrap

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"

	"github.com/blobfs/blobfs/csi"
	"github.com/blobfs/blobfs/internal/config"
)

// recordingMounter is a csi.Mounter that records blobfs mounts and binds
// and touches no mount table.
type recordingMounter struct {
	mu     sync.Mutex
	mounts map[string]csi.MountSpec // target → spec
	binds  map[string]bool          // target → read-only
}

func (m *recordingMounter) MountVolume(_ context.Context, target string, spec csi.MountSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mounts[target] = spec
	return nil
}
func (m *recordingMounter) RemountVolume(context.Context, string) error { return nil }
func (m *recordingMounter) UnmountVolume(_ context.Context, target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mounts, target)
	return nil
}
func (m *recordingMounter) Bind(_ context.Context, _, target string, readOnly bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.binds[target] = readOnly
	return nil
}
func (m *recordingMounter) Unbind(_ context.Context, target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.binds, target)
	return nil
}
func (m *recordingMounter) State(_ context.Context, path string) (csi.MountState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mounts[path]; ok {
		return csi.Mounted, nil
	}
	if _, ok := m.binds[path]; ok {
		return csi.Mounted, nil
	}
	return csi.NotExist, nil
}
func (m *recordingMounter) Probe(context.Context) error { return nil }

// TestCSIDriverMountsRenderedPVs hands each rendered PersistentVolume to
// the real blobfs node server the way kubelet would for a Ray pod (stage,
// then publish with the pod's service account token), and checks the
// mount it asks for: the right account, container and prefix, per-pod
// workload identity with the rendered client and tenant, read-only for
// the dataset. A renamed attribute or a handle the driver cannot parse
// fails here, not on a cluster.
func TestCSIDriverMountsRenderedPVs(t *testing.T) {
	s := testSettings()
	s.DatasetPrefix, s.CheckpointPrefix, s.CheckpointContainer = "imagenet", "runs", "ckpts"
	d := decodeStream(t, render(t, s))
	ctx := context.Background()
	tmp := t.TempDir()
	fm := &recordingMounter{mounts: map[string]csi.MountSpec{}, binds: map[string]bool{}}
	node, err := csi.NewNode(csi.NodeConfig{NodeID: "gpu-node-0", Mounter: fm, StateDir: filepath.Join(tmp, "state"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for claim, want := range map[string]struct{ container, prefix string }{
		ClaimDataset:     {s.Container, s.DatasetPrefix},
		ClaimCheckpoints: {s.CheckpointContainer, s.CheckpointPrefix},
	} {
		pv := d.pvs[d.pvcs[claim].Spec.VolumeName]
		src := pv.Spec.CSI
		// RWX claims reach the driver as MULTI_NODE_MULTI_WRITER; the pods'
		// fsGroup arrives as the volume mount group (fsGroupPolicy: File).
		vc := &csipb.VolumeCapability{
			AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{
				VolumeMountGroup: "100", MountFlags: pv.Spec.MountOptions}},
			AccessMode: &csipb.VolumeCapability_AccessMode{Mode: accessMode(pv.Spec.AccessModes)},
		}
		staging := filepath.Join(tmp, "staging", claim)
		if _, err := node.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: src.VolumeHandle, StagingTargetPath: staging,
			VolumeCapability: vc, VolumeContext: src.VolumeAttributes}); err != nil {
			t.Fatalf("%s: NodeStageVolume refuses the rendered PV: %v", claim, err)
		}
		podCtx := map[string]string{
			"csi.storage.k8s.io/pod.namespace":         d.sa.Namespace,
			"csi.storage.k8s.io/serviceAccount.name":   d.sa.Name,
			"csi.storage.k8s.io/serviceAccount.tokens": `{"` + TokenAudience + `":{"token":"header.payload.sig","expirationTimestamp":"2030-01-01T00:00:00Z"}}`,
		}
		for k, v := range src.VolumeAttributes {
			podCtx[k] = v
		}
		// Publish into a head pod and a worker pod, read-only as each
		// pod's volume says (kubelet's Readonly).
		for what, tmpl := range map[string]corev1.PodTemplateSpec{"head": d.head, "worker": d.workers} {
			target := filepath.Join(tmp, "pods", what, claim, "mount")
			vol := tmpl.Spec.Volumes[slicesIndex(tmpl.Spec.Volumes, claim)]
			readOnly := vol.PersistentVolumeClaim.ReadOnly
			if _, err := node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: src.VolumeHandle, StagingTargetPath: staging,
				TargetPath: target, VolumeCapability: vc, Readonly: readOnly, VolumeContext: podCtx}); err != nil {
				t.Fatalf("%s %s: NodePublishVolume refuses the rendered PV: %v", what, claim, err)
			}
			if ro, ok := fm.binds[target]; !ok || ro != readOnly {
				t.Errorf("%s %s: bound read-only=%v (bound %v), want %v", what, claim, ro, ok, readOnly)
			}
		}
		var spec *csi.MountSpec
		n := 0
		for _, sp := range fm.mounts {
			if sp.VolumeID == src.VolumeHandle {
				spec = &sp
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s: %d blobfs mounts, want one shared by head and worker (same identity)", claim, n)
		}
		st := spec.Config.Storage
		if st.Account != s.Account || st.Container != want.container || st.Subdirectory != want.prefix {
			t.Errorf("%s: mounts %s/%s/%s, want %s/%s/%s", claim, st.Account, st.Container, st.Subdirectory, s.Account, want.container, want.prefix)
		}
		if st.AuthMode != config.AuthWorkloadIdentity || st.ClientID != s.ClientID || st.TenantID != s.TenantID || st.TokenFile == "" {
			t.Errorf("%s: auth %v client %s tenant %s token file %q; want workload identity with the rendered identity and the pod's token",
				claim, st.AuthMode, st.ClientID, st.TenantID, st.TokenFile)
		}
		if wantPT := map[string]string{ClaimDataset: "on", ClaimCheckpoints: "auto"}[claim]; spec.Config.FS.Passthrough != wantPT {
			t.Errorf("%s: passthrough %q, want %q", claim, spec.Config.FS.Passthrough, wantPT)
		}
		if spec.Config.FS.GID != RayGID {
			t.Errorf("%s: mount gid %d, want the pods' fsGroup %d so uid %d can write", claim, spec.Config.FS.GID, RayGID, RayUID)
		}
	}
}

func accessMode(modes []corev1.PersistentVolumeAccessMode) csipb.VolumeCapability_AccessMode_Mode {
	if len(modes) == 1 && modes[0] == corev1.ReadWriteMany {
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	}
	return csipb.VolumeCapability_AccessMode_UNKNOWN
}

func slicesIndex(vs []corev1.Volume, name string) int {
	for i, v := range vs {
		if v.Name == name {
			return i
		}
	}
	return -1
}
