package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Mounted is a live mount. The CLI/daemon must call Unmount on SIGTERM
// and SIGINT: a process that dies without unmounting leaves the
// mountpoint answering ENOTCONN until someone runs `umount`.
type Mounted struct {
	dir    string
	vol    *Volume
	server *fuse.Server
	// done is closed once the kernel has let go of the mount and the
	// volume is closed, however the unmount happened (Unmount, umount(8),
	// a lazy detach once the last file closed).
	done chan struct{}
}

// Mount mounts opts.Store at mountpoint and serves it until unmounted.
// ctx bounds only the mounting (the container probe); the mount lives
// until Unmount. As root the mount is made directly (no fusermount); as
// another user fusermount3 must be installed.
func Mount(ctx context.Context, mountpoint string, opts Options) (*Mounted, error) {
	vol, err := NewVolume(ctx, opts)
	if err != nil {
		return nil, err
	}
	opts = vol.opts
	dir, err := filepath.Abs(mountpoint)
	if err != nil {
		vol.Close(ctx)
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	attrTTL, entryTTL, negTTL := opts.AttrTTL, opts.EntryTTL, opts.NegativeTTL
	// go-fuse prints its debug trace and its own complaints through a
	// log.Logger; route both into slog.
	fuseLevel := slog.LevelWarn
	if opts.Debug {
		fuseLevel = slog.LevelInfo
	}
	fuseLog := slog.NewLogLogger(opts.Logger.Handler(), fuseLevel)
	root := &dirNode{node{vol: vol}}
	mo := fuse.MountOptions{
		AllowOther:    opts.AllowOther,
		MaxWrite:      opts.MaxWrite,
		MaxBackground: opts.MaxBackground,
		MaxReadAhead:  opts.MaxReadAhead,
		FsName:        opts.FSName,
		Name:          "blobfs",
		// The kernel checks mode bits against UID/GID/Umask; without
		// this, allow_other would let anyone do anything.
		Options: []string{"default_permissions"},
		// Replies are always in-memory buffers, never file descriptors:
		// splicing would only add the 1 MiB "max pipe size" fallback.
		DisableSplice: true,
		// No xattrs are stored. Answering the first xattr request with
		// ENOSYS makes the kernel stop asking: every later getxattr,
		// listxattr and setxattr fails with ENOTSUP (which ls, cp -a and
		// Python's shutil treat as "no xattrs") without a round trip.
		// Without it the kernel asks for security.capability before
		// every write(2), doubling the requests of small writes.
		DisableXAttrs: true,
		// O_TRUNC arrives with OPEN instead of as a separate SETATTR.
		ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
		Debug:             opts.Debug,
		Logger:            fuseLog,
	}
	if os.Geteuid() == 0 {
		mo.DirectMountStrict = true
		mo.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV
		if opts.ReadOnly {
			mo.DirectMountFlags |= syscall.MS_RDONLY
		}
	} else if opts.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	server, err := gofs.Mount(dir, root, &gofs.Options{
		MountOptions:    mo,
		AttrTimeout:     &attrTTL,
		EntryTimeout:    &entryTTL,
		NegativeTimeout: &negTTL,
		UID:             opts.UID,
		GID:             opts.GID,
		Logger:          fuseLog,
	})
	if err != nil {
		vol.Close(ctx)
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	if opts.passthroughWanted() {
		vol.backing.probe = probeBacking(server)
		vol.backing.enabled.Store(true)
	}
	m := &Mounted{dir: dir, vol: vol, server: server, done: make(chan struct{})}
	go func() {
		server.Wait()
		// Releases still running finish first; nothing else can start.
		if err := vol.Close(context.WithoutCancel(ctx)); err != nil {
			vol.log.Warn("blobfs: closing volume", "err", err)
		}
		close(m.done)
	}()
	if opts.ReadAheadKB > 0 {
		if err := setReadAhead(dir, opts.ReadAheadKB); err != nil {
			vol.log.Warn("blobfs: could not raise readahead", "dir", dir, "err", err)
		}
	}
	return m, nil
}

// setReadAhead writes the mount's bdi read_ahead_kb, the only way to let
// the kernel read ahead more than 128 KiB on a FUSE mount.
func setReadAhead(dir string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(p, []byte(strconv.Itoa(kb)), 0)
}

// Dir is the absolute mountpoint.
func (m *Mounted) Dir() string { return m.dir }

// Volume is the mounted volume (for stats and direct use in tests).
func (m *Mounted) Volume() *Volume { return m.vol }

// Wait blocks until the mount is gone and the volume closed.
func (m *Mounted) Wait() { <-m.done }

// Unmount unmounts and waits until the volume is closed. While files are
// open the kernel refuses (EBUSY); Unmount retries until ctx is done and
// then gives up, leaving the mount working. A daemon that must go anyway
// can then detach lazily (umount -l: unix.Unmount(dir, unix.MNT_DETACH))
// and Wait: the mount stays served until the last open file is closed.
func (m *Mounted) Unmount(ctx context.Context) error {
	for {
		err := m.server.Unmount()
		if err == nil {
			break
		}
		select {
		case <-m.done:
			return nil // unmounted by someone else
		default:
		}
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			break // not mounted any more: wait for the server to notice
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("unmount %s: %w", m.dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unmount %s: %w (files still open): %w", m.dir, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("unmount %s: waiting for the server: %w", m.dir, ctx.Err())
	}
}
