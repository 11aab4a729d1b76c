package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/config"
	"github.com/blobfs/blobfs/internal/mountinfo"
)

// MountState is what a path is, as far as mounting goes.
type MountState int

// Mount states.
const (
	// NotExist: nothing at the path.
	NotExist MountState = iota
	// NotMounted: a file or directory that is not a mount point.
	NotMounted
	// Mounted: a mount point that answers.
	Mounted
	// Stale: a mount point whose FUSE server is gone; every access fails
	// with ENOTCONN ("transport endpoint is not connected"). It must be
	// unmounted (lazily: it cannot be flushed) before it can be used again.
	Stale
)

func (s MountState) String() string {
	switch s {
	case NotExist:
		return "not-exist"
	case NotMounted:
		return "not-mounted"
	case Mounted:
		return "mounted"
	case Stale:
		return "stale"
	}
	return "MountState(" + strconv.Itoa(int(s)) + ")"
}

// MountSpec is one blobfs mount to make: the volume it serves and its
// complete configuration, secrets included (config.Secret keeps them out
// of logs; they travel to the mount process only through a 0600 file).
type MountSpec struct {
	VolumeID string
	Config   config.Mount
}

// Mounter is everything the node server does to the mount table. The
// node server is written against it so that it can be tested without root
// (a fake) and without FUSE (a stand-in that bind-mounts a directory).
//
// Every method is idempotent where the CSI call that uses it must be:
// mounting what is already mounted the same way, and unmounting what is
// not mounted, succeed.
type Mounter interface {
	// MountVolume makes a blobfs FUSE mount of spec at target and returns
	// once it serves. A healthy blobfs mount of the same settings at target
	// is success; one with different settings is an error.
	MountVolume(ctx context.Context, target string, spec MountSpec) error
	// RemountVolume repairs a stale blobfs mount at target with the
	// settings it was last mounted with (lazy unmount, mount again). It is
	// how NodePublishVolume repairs a staging mount without the node-stage
	// secrets, which only NodeStageVolume receives.
	RemountVolume(ctx context.Context, target string) error
	// UnmountVolume unmounts the blobfs mount at target (lazily when stale
	// or busy) and forgets its settings. Nothing mounted is success.
	UnmountVolume(ctx context.Context, target string) error
	// Bind bind-mounts source at target, read-only if asked. target must
	// exist.
	Bind(ctx context.Context, source, target string, readOnly bool) error
	// Unbind unmounts the bind mount at target (lazily when stale). Nothing
	// mounted is success.
	Unbind(ctx context.Context, target string) error
	// State reports what is at path.
	State(ctx context.Context, path string) (MountState, error)
	// Probe reports whether new mounts can be made now.
	Probe(ctx context.Context) error
}

// VolumeMounter makes and removes the FUSE mounts themselves. The node
// plugin's implementation is a SupervisorClient: the mounts are made by the
// mount supervisor (`blobfs csi --mode mounter`), a separate container, so
// that they outlive the node plugin's container.
type VolumeMounter interface {
	Mount(ctx context.Context, target string, spec MountSpec) error
	Remount(ctx context.Context, target string) error
	Unmount(ctx context.Context, target string) error
	Probe(ctx context.Context) error
}

// SystemMounter is the real Mounter: volume mounts through Volumes, bind
// mounts and state with direct system calls (the driver's image has no
// mount(8)), mount points from /proc/self/mountinfo.
type SystemMounter struct {
	Volumes VolumeMounter
}

var _ Mounter = (*SystemMounter)(nil)

// MountVolume implements Mounter.
func (m *SystemMounter) MountVolume(ctx context.Context, target string, spec MountSpec) error {
	return m.Volumes.Mount(ctx, target, spec)
}

// RemountVolume implements Mounter.
func (m *SystemMounter) RemountVolume(ctx context.Context, target string) error {
	return m.Volumes.Remount(ctx, target)
}

// UnmountVolume implements Mounter.
func (m *SystemMounter) UnmountVolume(ctx context.Context, target string) error {
	return m.Volumes.Unmount(ctx, target)
}

// Probe implements Mounter.
func (m *SystemMounter) Probe(ctx context.Context) error { return m.Volumes.Probe(ctx) }

// Bind implements Mounter.
func (m *SystemMounter) Bind(_ context.Context, source, target string, readOnly bool) error {
	return bindMount(source, target, readOnly)
}

// Unbind implements Mounter.
func (m *SystemMounter) Unbind(_ context.Context, target string) error {
	return unmountPath(target)
}

// State implements Mounter.
func (m *SystemMounter) State(_ context.Context, path string) (MountState, error) {
	return pathState(path)
}

// pathState stats path first: a dead FUSE mount answers ENOTCONN (or
// ECONNABORTED after an abort through fusectl), which is all that tells a
// stale mount from a live one. Otherwise mountinfo says whether path is a
// mount point; comparing st_dev with the parent's, as
// IsLikelyNotMountPoint does, misses bind mounts of the same filesystem.
func pathState(path string) (MountState, error) {
	var st unix.Stat_t
	switch err := unix.Stat(path, &st); {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		return NotExist, nil
	case isStaleErr(err):
		return Stale, nil
	default:
		return NotExist, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	mounted, err := isMountPoint(path)
	if err != nil {
		return NotExist, err
	}
	if mounted {
		// stat(2) of a mountpoint whose FUSE server died can still
		// succeed: the kernel answers it from its attribute cache (120 s
		// by default). statfs(2) always goes to the server, so it is the
		// one that says ENOTCONN.
		var sfs unix.Statfs_t
		if err := unix.Statfs(path, &sfs); isStaleErr(err) {
			return Stale, nil
		}
		return Mounted, nil
	}
	return NotMounted, nil
}

// isStaleErr reports the errors a FUSE mount without a server returns.
func isStaleErr(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// isMountPoint reports whether path is a mount point in this process's
// mount namespace.
func isMountPoint(path string) (bool, error) {
	ok, err := mountinfo.IsMountPoint(path)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", mountinfo.Path, err)
	}
	return ok, nil
}

// bindMount bind-mounts source at target. A read-only bind needs a second
// call: MS_RDONLY is ignored on the first MS_BIND and applies only as
// MS_BIND|MS_REMOUNT|MS_RDONLY, which must also repeat the per-mount flags
// the bind inherited (nosuid, nodev, noexec), or the kernel refuses to
// clear them (EPERM) where they are locked.
func bindMount(source, target string, readOnly bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", source, target, err)
	}
	if !readOnly {
		return nil
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	var sfs unix.Statfs_t
	if err := unix.Statfs(target, &sfs); err == nil {
		for st, ms := range map[int64]uintptr{unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC} {
			if sfs.Flags&st != 0 {
				flags |= ms
			}
		}
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// unmountPath unmounts whatever is mounted at path. Nothing mounted is
// success. A stale FUSE mount is detached (MNT_DETACH): it has nothing to
// flush and a plain unmount can hang on it. A busy mount is detached too,
// so the caller can make progress; the kernel finishes when the last user
// lets go.
func unmountPath(path string) error {
	st, err := pathState(path)
	if err != nil {
		return err
	}
	switch st {
	case NotExist, NotMounted:
		return nil
	case Stale:
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("detach stale mount %s: %w", path, err)
		}
		return nil
	}
	err = unix.Unmount(path, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(path, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}
