package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blobfs/blobfs/auth"
)

// NodeConfig configures the Node service.
type NodeConfig struct {
	// NodeID is this node's name in the cluster (NodeGetInfo).
	NodeID string
	// Mounter makes and inspects mounts.
	Mounter Mounter
	// StateDir keeps the node's records and per-pod token files across
	// plugin restarts. It must be on the node's disk (a hostPath), and
	// visible at the same path to the mount supervisor, whose mounts read
	// the token files.
	StateDir string
	// TenantID and AuthorityHost are the defaults for workload identity
	// volumes that name no tenant (the cluster's Entra tenant).
	TenantID      string
	AuthorityHost string
	// AllowCustomEndpoints lets volumes set the endpoint attribute.
	AllowCustomEndpoints bool
	Logger               *slog.Logger
}

// Node serves the CSI Node service.
//
// Without per-pod identity, NodeStageVolume makes one FUSE mount per
// volume per node at the staging path, and NodePublishVolume bind-mounts
// it into each pod's target, so all pods on a node share one mount, one
// set of kernel caches and one blobfs process (which shares the node's
// block cache with every other mount).
//
// With per-pod identity (volume attribute mountWithWorkloadIdentityToken),
// the pod's token arrives only in NodePublishVolume, so the mount is made
// there instead, keyed by (volume, pod namespace, service account, client
// id, tenant): pods with the same identity share a mount, pods with
// different identities never do. Every (re)publish rewrites the mount's
// 0600 token file, which the mount's credential re-reads at each refresh;
// kubelet republishes periodically (CSIDriver requiresRepublish: true), so
// a running mount always has a fresh token.
type Node struct {
	csi.UnimplementedNodeServer
	cfg   NodeConfig
	state nodeState
	log   *slog.Logger
	locks *keyLocks // by volume id
}

// NewNode returns the Node service; it creates the state directory (0700).
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, fmt.Errorf("csi: node id is empty: %w", ErrInvalid)
	}
	if cfg.Mounter == nil {
		return nil, fmt.Errorf("csi: node has no Mounter: %w", ErrInvalid)
	}
	if !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("csi: state directory %q must be absolute: %w", cfg.StateDir, ErrInvalid)
	}
	dir := filepath.Join(cfg.StateDir, "node")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("csi: state directory: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Node{cfg: cfg, state: nodeState{dir: dir}, log: log.With("service", "node"), locks: newKeyLocks()}, nil
}

func (n *Node) defaults() specDefaults {
	return specDefaults{tenantID: n.cfg.TenantID, authorityHost: n.cfg.AuthorityHost, allowCustomEndpoints: n.cfg.AllowCustomEndpoints}
}

// Probe reports whether the node can mount: the Mounter's own probe (for
// the SystemMounter: the mount supervisor answers and can open /dev/fuse).
func (n *Node) Probe(ctx context.Context) error { return n.cfg.Mounter.Probe(ctx) }

// NodeGetInfo implements csi.NodeServer. Volumes are reachable from any
// node and FUSE mounts are not a scarce resource: no topology, no limit.
func (n *Node) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.cfg.NodeID}, nil
}

// NodeGetCapabilities implements csi.NodeServer. VOLUME_MOUNT_GROUP makes
// kubelet hand the pod's fsGroup to the driver instead of chowning every
// file of the volume itself (with CSIDriver fsGroupPolicy: File), which
// on a bucket of millions of blobs would take hours.
func (n *Node) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	resp := &csi.NodeGetCapabilitiesResponse{}
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP,
	} {
		resp.Capabilities = append(resp.Capabilities, &csi.NodeServiceCapability{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

// checkPath validates a path kubelet hands over.
func checkPath(what, p string) error {
	if p == "" {
		return status.Errorf(codes.InvalidArgument, "%s is missing", what)
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return status.Errorf(codes.InvalidArgument, "%s %q must be a clean absolute path", what, p)
	}
	return nil
}

// NodeStageVolume implements csi.NodeServer: one FUSE mount of the volume
// at the staging path, shared by every pod on the node.
//
// Idempotent: staging a volume that is mounted there with the same
// settings succeeds (the mount supervisor compares them and refreshes the
// stored secrets); different settings are FAILED_PRECONDITION. A stale
// mount at the staging path (its server died) is replaced.
func (n *Node) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is missing")
	}
	staging := req.GetStagingTargetPath()
	if err := checkPath("staging target path", staging); err != nil {
		return nil, toStatus(err)
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume capability is missing")
	}
	spec, err := parseNodeVolume(n.defaults(), id, req.GetVolumeContext(), req.GetSecrets(), req.GetVolumeCapability(), true)
	if err != nil {
		return nil, toStatus(err)
	}
	release, ok := n.locks.tryLock(id)
	if !ok {
		return nil, aborted("volume", id)
	}
	defer release()

	rec := stageRecord{VolumeID: id, StagingPath: staging, PerPod: spec.perPod, MountGroup: spec.mountGroup, GIDFromGroup: spec.gidFromGroup}
	if spec.perPod {
		// The identity's token comes with NodePublishVolume; mount there.
		if err := n.state.writeStage(rec); err != nil {
			return nil, statusf(err, "recording stage")
		}
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := n.ensureVolumeMount(ctx, staging, MountSpec{VolumeID: id, Config: spec.mount}); err != nil {
		return nil, toStatus(err)
	}
	if err := n.state.writeStage(rec); err != nil {
		return nil, statusf(err, "recording stage")
	}
	n.log.InfoContext(ctx, "staged", "volume_id", id, "staging_path", staging, "read_only", spec.mount.FS.ReadOnly)
	return &csi.NodeStageVolumeResponse{}, nil
}

// ensureVolumeMount mounts spec at dir unless it is already served there:
// a stale mount is unmounted first, a missing directory is created.
func (n *Node) ensureVolumeMount(ctx context.Context, dir string, spec MountSpec) error {
	st, err := n.cfg.Mounter.State(ctx, dir)
	if err != nil {
		return statusf(err, "inspecting %s", dir)
	}
	switch st {
	case Stale:
		n.log.WarnContext(ctx, "mount is stale (its blobfs process died); remounting", "volume_id", spec.VolumeID, "path", dir)
		if err := n.cfg.Mounter.UnmountVolume(ctx, dir); err != nil {
			return statusf(err, "unmounting stale mount at %s", dir)
		}
	case NotExist:
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return statusf(err, "creating %s", dir)
		}
	}
	if err := n.cfg.Mounter.MountVolume(ctx, dir, spec); err != nil {
		return statusf(err, "mounting volume %s at %s", spec.VolumeID, dir)
	}
	return nil
}

// NodeUnstageVolume implements csi.NodeServer. Idempotent: nothing
// mounted is success.
func (n *Node) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is missing")
	}
	staging := req.GetStagingTargetPath()
	if err := checkPath("staging target path", staging); err != nil {
		return nil, toStatus(err)
	}
	release, ok := n.locks.tryLock(id)
	if !ok {
		return nil, aborted("volume", id)
	}
	defer release()

	rec, err := n.state.readStage(id)
	if err != nil {
		return nil, statusf(err, "reading stage record")
	}
	if rec != nil && rec.PerPod {
		// Identity mounts go with their last target; collect any that a
		// crash left behind.
		if err := n.gcIdentities(ctx, id); err != nil {
			return nil, toStatus(err)
		}
	} else if err := n.cfg.Mounter.UnmountVolume(ctx, staging); err != nil {
		return nil, statusf(err, "unmounting %s", staging)
	}
	if err := n.state.removeStage(id); err != nil {
		return nil, statusf(err, "removing stage record")
	}
	n.state.gcVolume(id)
	n.log.InfoContext(ctx, "unstaged", "volume_id", id, "staging_path", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume implements csi.NodeServer: a bind mount of the staged
// mount (or of the pod identity's mount) at the pod's target, read-only
// when the pod or the access mode asks.
//
// Idempotent: a target already published the same way succeeds; for a
// per-pod identity volume this is kubelet's periodic republish, which
// rewrites the token file. A target published differently is
// ALREADY_EXISTS. A stale staging mount is repaired first (remounted with
// its last settings); a stale target is detached and bound again.
func (n *Node) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is missing")
	}
	target := req.GetTargetPath()
	if err := checkPath("target path", target); err != nil {
		return nil, toStatus(err)
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume capability is missing")
	}
	staging := req.GetStagingTargetPath()
	if err := checkPath("staging target path", staging); err != nil {
		return nil, toStatus(err)
	}
	spec, err := parseNodeVolume(n.defaults(), id, req.GetVolumeContext(), req.GetSecrets(), req.GetVolumeCapability(), false)
	if err != nil {
		return nil, toStatus(err)
	}
	var pod podIdentity
	if spec.perPod {
		if pod, err = parsePodIdentity(req.GetVolumeContext()); err != nil {
			return nil, toStatus(err)
		}
	}
	release, ok := n.locks.tryLock(id)
	if !ok {
		return nil, aborted("volume", id)
	}
	defer release()

	readOnly := req.GetReadonly() || spec.mount.FS.ReadOnly
	rec := targetRecord{VolumeID: id, Target: target, ReadOnly: readOnly, AccessMode: spec.accessMode.String()}
	if err := n.checkSingleWriter(id, target, spec); err != nil {
		return nil, toStatus(err)
	}
	if spec.perPod {
		rec.Identity = identityKey(pod, spec)
		if rec.Source, err = n.identityMount(ctx, spec, pod, rec.Identity); err != nil {
			return nil, toStatus(err)
		}
	} else {
		if rec.Source, err = n.stagedSource(ctx, id, staging, spec); err != nil {
			return nil, toStatus(err)
		}
	}

	st, err := n.cfg.Mounter.State(ctx, target)
	if err != nil {
		return nil, statusf(err, "inspecting %s", target)
	}
	switch st {
	case Mounted:
		old, err := n.state.readTarget(id, target)
		if err != nil {
			return nil, statusf(err, "reading target record")
		}
		if old != nil && old.Source == rec.Source && old.ReadOnly == rec.ReadOnly {
			return &csi.NodePublishVolumeResponse{}, nil
		}
		if old != nil {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is published at %s with other settings (read-only %v)", id, target, old.ReadOnly)
		}
		// Mounted but unrecorded: a publish that crashed before writing
		// its record. Redo it.
		if err := n.cfg.Mounter.Unbind(ctx, target); err != nil {
			return nil, statusf(err, "unmounting %s", target)
		}
	case Stale:
		n.log.WarnContext(ctx, "target is stale; binding it again", "volume_id", id, "target", target)
		if err := n.cfg.Mounter.Unbind(ctx, target); err != nil {
			return nil, statusf(err, "detaching stale %s", target)
		}
	case NotExist:
		if err := os.MkdirAll(target, 0o750); err != nil {
			return nil, statusf(err, "creating %s", target)
		}
	}
	if err := n.cfg.Mounter.Bind(ctx, rec.Source, target, readOnly); err != nil {
		return nil, statusf(err, "publishing volume %s at %s", id, target)
	}
	if err := n.state.writeTarget(rec); err != nil {
		_ = n.cfg.Mounter.Unbind(ctx, target)
		return nil, statusf(err, "recording target")
	}
	n.log.InfoContext(ctx, "published", "volume_id", id, "target", target, "read_only", readOnly, "per_pod_identity", spec.perPod)
	return &csi.NodePublishVolumeResponse{}, nil
}

// checkSingleWriter enforces SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod):
// such a volume is published at one target only.
func (n *Node) checkSingleWriter(id, target string, spec *volumeSpec) error {
	recs, err := n.state.targets(id)
	if err != nil {
		return statusf(err, "reading target records")
	}
	single := csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER.String()
	for _, r := range recs {
		if r.Target == target {
			continue
		}
		if spec.accessMode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER || r.AccessMode == single {
			return status.Errorf(codes.FailedPrecondition, "volume %s is single-writer and already published at %s", id, r.Target)
		}
	}
	return nil
}

// stagedSource returns the staging mount to bind, repairing it if its
// server died. A pod whose fsGroup decided the staged mount's gid cannot
// share it with a pod of another fsGroup.
func (n *Node) stagedSource(ctx context.Context, id, staging string, spec *volumeSpec) (string, error) {
	st, err := n.cfg.Mounter.State(ctx, staging)
	if err != nil {
		return "", statusf(err, "inspecting %s", staging)
	}
	switch st {
	case Stale:
		n.log.WarnContext(ctx, "staging mount is stale (its blobfs process died); repairing", "volume_id", id, "staging_path", staging)
		if err := n.cfg.Mounter.RemountVolume(ctx, staging); err != nil {
			return "", statusf(err, "repairing stale staging mount %s", staging)
		}
	case NotExist, NotMounted:
		return "", status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", id, staging)
	}
	rec, err := n.state.readStage(id)
	if err != nil {
		return "", statusf(err, "reading stage record")
	}
	if rec != nil && rec.GIDFromGroup && spec.mountGroup != rec.MountGroup {
		return "", status.Errorf(codes.FailedPrecondition,
			"volume %s is mounted on this node for fsGroup %s, this pod has fsGroup %q: pods sharing a volume on a node need the same fsGroup, or set the gid volume attribute",
			id, rec.MountGroup, spec.mountGroup)
	}
	return staging, nil
}

// identityKey names a per-pod identity mount: everything that decides what
// the mount may access.
func identityKey(pod podIdentity, spec *volumeSpec) string {
	s := spec.mount.Storage
	return shortHash(pod.namespace, pod.serviceAccount, s.ClientID, s.TenantID)[:20]
}

// identityMount writes the pod's token and returns the identity's mount,
// mounting it (or repairing it) if needed.
func (n *Node) identityMount(ctx context.Context, spec *volumeSpec, pod podIdentity, key string) (string, error) {
	id := spec.id
	tokenFile := n.state.tokenFile(id, key)
	// Written before anything is mounted, so a new mount's first token
	// request finds it, and on every republish, so a running mount's next
	// refresh reads a fresh token.
	if err := auth.WriteTokenFile(tokenFile, pod.token); err != nil {
		return "", statusf(err, "writing the pod's token file")
	}
	if old, err := n.state.readIdentity(id, key); err != nil {
		return "", statusf(err, "reading identity record")
	} else if old != nil && old.GIDFromGroup && old.MountGroup != spec.mountGroup {
		return "", status.Errorf(codes.FailedPrecondition,
			"volume %s is mounted for this identity with fsGroup %s, this pod has fsGroup %q", id, old.MountGroup, spec.mountGroup)
	}
	mnt := n.state.identityMount(id, key)
	st, err := n.cfg.Mounter.State(ctx, mnt)
	if err != nil {
		return "", statusf(err, "inspecting %s", mnt)
	}
	if st != Mounted {
		spec.mount.Storage.TokenFile = tokenFile
		if err := n.ensureVolumeMount(ctx, mnt, MountSpec{VolumeID: id, Config: spec.mount}); err != nil {
			return "", err
		}
		n.log.InfoContext(ctx, "mounted for pod identity", "volume_id", id, "identity", key,
			"namespace", pod.namespace, "service_account", pod.serviceAccount)
	}
	if err := n.state.writeIdentity(key, identityRecord{VolumeID: id, MountGroup: spec.mountGroup, GIDFromGroup: spec.gidFromGroup}); err != nil {
		return "", statusf(err, "recording identity")
	}
	return mnt, nil
}

// NodeUnpublishVolume implements csi.NodeServer: unmount the target and
// remove it (the spec makes the plugin delete what it created there). The
// last target of a per-pod identity takes the identity's mount and token
// with it. Idempotent: a missing or unmounted target is success.
func (n *Node) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is missing")
	}
	target := req.GetTargetPath()
	if err := checkPath("target path", target); err != nil {
		return nil, toStatus(err)
	}
	release, ok := n.locks.tryLock(id)
	if !ok {
		return nil, aborted("volume", id)
	}
	defer release()

	rec, err := n.state.readTarget(id, target)
	if err != nil {
		return nil, statusf(err, "reading target record")
	}
	// A target can hold stacked mounts (a publish retried by hand, an
	// old mount shadowed by a new one): peel them all.
	for i := 0; i < 8; i++ {
		st, err := n.cfg.Mounter.State(ctx, target)
		if err != nil {
			return nil, statusf(err, "inspecting %s", target)
		}
		if st != Mounted && st != Stale {
			break
		}
		if err := n.cfg.Mounter.Unbind(ctx, target); err != nil {
			return nil, statusf(err, "unmounting %s", target)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, statusf(err, "removing %s", target)
	}
	if err := n.state.removeTarget(id, target); err != nil {
		return nil, statusf(err, "removing target record")
	}
	if rec != nil && rec.Identity != "" {
		if err := n.gcIdentities(ctx, id); err != nil {
			return nil, toStatus(err)
		}
	}
	n.state.gcVolume(id)
	n.log.InfoContext(ctx, "unpublished", "volume_id", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// gcIdentities unmounts and forgets the volume's identity mounts that no
// target uses any more.
func (n *Node) gcIdentities(ctx context.Context, id string) error {
	keys, err := n.state.identities(id)
	if err != nil {
		return statusf(err, "listing identities")
	}
	recs, err := n.state.targets(id)
	if err != nil {
		return statusf(err, "reading target records")
	}
	used := map[string]bool{}
	for _, r := range recs {
		used[r.Identity] = true
	}
	for _, k := range keys {
		if used[k] {
			continue
		}
		mnt := n.state.identityMount(id, k)
		if err := n.cfg.Mounter.UnmountVolume(ctx, mnt); err != nil {
			return statusf(err, "unmounting identity mount %s", mnt)
		}
		if err := n.state.removeIdentity(id, k); err != nil {
			return statusf(err, "removing identity %s", k)
		}
		n.log.InfoContext(ctx, "unmounted pod identity mount", "volume_id", id, "identity", k)
	}
	return nil
}

// NodeGetVolumeStats implements csi.NodeServer with statfs of the
// published path. A stale mount is FAILED_PRECONDITION: it is repaired at
// the next publish.
func (n *Node) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is missing")
	}
	p := req.GetVolumePath()
	if p == "" {
		return nil, status.Error(codes.InvalidArgument, "volume path is missing")
	}
	st, err := n.cfg.Mounter.State(ctx, p)
	if err != nil {
		return nil, statusf(err, "inspecting %s", p)
	}
	switch st {
	case NotExist:
		return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", p)
	case Stale:
		return nil, status.Errorf(codes.FailedPrecondition, "volume path %s is a stale mount (its blobfs process died)", p)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(p, &sfs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", p)
		}
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", p, err)
	}
	bs := int64(sfs.Bsize)
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{
			Unit:      csi.VolumeUsage_BYTES,
			Total:     int64(sfs.Blocks) * bs,
			Available: int64(sfs.Bavail) * bs,
			Used:      int64(sfs.Blocks-sfs.Bfree) * bs,
		},
		{
			Unit:      csi.VolumeUsage_INODES,
			Total:     int64(sfs.Files),
			Available: int64(sfs.Ffree),
			Used:      int64(sfs.Files - sfs.Ffree),
		},
	}}, nil
}

// Recover reconciles the state directory with the mount table after a
// restart of the node plugin: records of targets that are no longer
// mounted are dropped, identity mounts no target uses are unmounted, and
// stale mounts are reported (they are repaired by the next publish, and
// staging mounts by the supervisor's own start-up). Problems are logged,
// not fatal: the plugin must come up to serve unpublishes.
func (n *Node) Recover(ctx context.Context) {
	dirs, err := n.state.volumeDirs()
	if err != nil {
		n.log.ErrorContext(ctx, "recovery: reading state", "error", err)
		return
	}
	var live, stale, dropped int
	for _, dir := range dirs {
		recs, err := n.state.targetsIn(dir)
		if err != nil {
			n.log.ErrorContext(ctx, "recovery: reading targets", "dir", dir, "error", err)
			continue
		}
		volumes := map[string]bool{}
		for _, r := range recs {
			volumes[r.VolumeID] = true
			st, err := n.cfg.Mounter.State(ctx, r.Target)
			switch {
			case err != nil:
				n.log.WarnContext(ctx, "recovery: inspecting target", "target", r.Target, "error", err)
			case st == Mounted:
				live++
			case st == Stale:
				stale++
				n.log.WarnContext(ctx, "recovery: target is stale; the pod needs the next publish or a restart", "volume_id", r.VolumeID, "target", r.Target)
			default:
				dropped++
				_ = n.state.removeTarget(r.VolumeID, r.Target)
			}
		}
		var stage stageRecord
		if ok, _ := readJSON(filepath.Join(dir, "stage.json"), &stage); ok {
			volumes[stage.VolumeID] = true
		}
		var ident identityRecord
		if ids, _ := listDirs(filepath.Join(dir, "identities")); len(ids) > 0 {
			if ok, _ := readJSON(filepath.Join(dir, "identities", ids[0], "identity.json"), &ident); ok {
				volumes[ident.VolumeID] = true
			}
		}
		for v := range volumes {
			if err := n.gcIdentities(ctx, v); err != nil {
				n.log.WarnContext(ctx, "recovery: collecting unused identity mounts", "volume_id", v, "error", err)
			}
			n.state.gcVolume(v)
		}
	}
	n.log.InfoContext(ctx, "recovered node state", "live_targets", live, "stale_targets", stale, "dropped_records", dropped)
}
