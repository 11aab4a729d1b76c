package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/blobfs/blobfs/blob"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE passthrough: a file the node cache holds whole, and has verified,
// is handed to the kernel as a local file at open (Linux 6.9+, root). Its
// reads then never reach the daemon: the kernel reads the cache's data
// file through that file's own page cache and readahead, at local-disk
// speed and without the daemon's CPU.
//
// The kernel's rules shape the bookkeeping (fs/fuse/iomode.c): while one
// open of an inode is passthrough, every open of it must be (with the same
// backing file); while one is not, none may be. A mismatch fails the open
// with EIO. So each fileNode counts its open handles of both kinds and
// chooses accordingly:
//
//   - no handle open, a read-only open, the file whole in the cache:
//     passthrough;
//   - passthrough handles open: passthrough again for a read-only open
//     (the kernel keeps the first backing file); a write open fails with
//     ETXTBSY (only possible where Passthrough is On: writes would land in
//     the cache's file, not in Blob);
//   - plain handles open (a writer, or a reader from before the file was
//     cached): plain.
//
// The counts are raised before the kernel sees the open and lowered after
// it let go (Release comes after the kernel's own release), so they are
// never below the kernel's and the choice never contradicts its state.

// PassthroughMode says when fully cached files are handed to the kernel.
type PassthroughMode int

const (
	// PassthroughAuto: on read-only mounts (where no write can meet a
	// passthrough reader), if the kernel accepts backing files.
	PassthroughAuto PassthroughMode = iota
	// PassthroughOff: every read goes through the daemon.
	PassthroughOff
	// PassthroughOn: also on writable mounts; opening a file for writing
	// while it is open for passthrough reads fails with ETXTBSY.
	PassthroughOn
)

func (m PassthroughMode) String() string {
	switch m {
	case PassthroughAuto:
		return "auto"
	case PassthroughOff:
		return "off"
	case PassthroughOn:
		return "on"
	}
	return fmt.Sprintf("PassthroughMode(%d)", int(m))
}

// ParsePassthroughMode parses auto, on or off.
func ParsePassthroughMode(s string) (PassthroughMode, error) {
	for _, m := range []PassthroughMode{PassthroughAuto, PassthroughOff, PassthroughOn} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("passthrough %q: want auto, on or off", s)
}

// Backing is a local file holding exactly one blob version's bytes,
// intact until Close.
type Backing = interface {
	File() *os.File
	Close() error
}

// BackingOpener is a Reader that can hand a fully cached blob to the
// kernel (the node cache's Reader).
type BackingOpener interface {
	// OpenBacking returns the local file of name at etag (size bytes), or
	// an error when there is none; the volume then serves the file itself.
	OpenBacking(ctx context.Context, name string, etag blob.ETag, size int64) (Backing, error)
}

// backingState is the volume's passthrough switch: set up by Mount.
type backingState struct {
	// enabled: the mode allows it, the Reader can, and the kernel took a
	// probe backing file.
	enabled atomic.Bool
	// probe registers and unregisters a backing file with the kernel
	// once (the first passthrough open), to learn whether it accepts the
	// cache's files (root, CONFIG_FUSE_PASSTHROUGH, stacking depth).
	probe  func(*os.File) error
	probed atomic.Bool
	opens  atomic.Uint64
}

// passthroughWanted reports whether Options ask for passthrough and the
// Reader can do it.
func (o Options) passthroughWanted() bool {
	if _, ok := o.Reader.(BackingOpener); !ok || o.DirectIO {
		return false
	}
	switch o.Passthrough {
	case PassthroughOn:
		return true
	case PassthroughAuto:
		return o.ReadOnly
	}
	return false
}

// PassthroughOpens counts the opens handed to the kernel.
func (v *Volume) PassthroughOpens() uint64 { return v.backing.opens.Load() }

// openBacking returns a Backing for h's committed version, or nil.
func (v *Volume) openBacking(ctx context.Context, h *Handle) Backing {
	if !v.backing.enabled.Load() {
		return nil
	}
	etag, size, ok := h.committed()
	if !ok || size == 0 {
		return nil
	}
	b, err := v.reader.(BackingOpener).OpenBacking(ctx, h.Name(), etag, size)
	if err != nil {
		return nil
	}
	if !v.backing.probed.Load() {
		// Checked with a real cache file: the kernel refuses some
		// filesystems (a cache directory on overlayfs exceeds the
		// stacking depth) and non-root daemons.
		if err := v.backing.probe(b.File()); err != nil {
			v.backing.enabled.Store(false)
			v.log.Warn("blobfs: the kernel refuses FUSE passthrough; every read goes through the daemon", "err", err)
			b.Close()
			return nil
		}
		v.backing.probed.Store(true)
	}
	return b
}

// errTextBusy: a write open of a file open for passthrough reads.
var errTextBusy = errors.New("open for passthrough reads")

// openMode decides, under n.mu, whether an open is passthrough (see the
// rules above); b is the Backing prepared for it, or nil.
func (n *fileNode) openModeLocked(writable bool, b Backing) (pass bool, err error) {
	switch {
	case n.passOpens > 0:
		if writable {
			return false, errTextBusy
		}
		return true, nil
	case b != nil && n.plainOpens == 0:
		return true, nil
	}
	return false, nil
}

// passthroughHandle is an open file the kernel reads from its Backing.
// Reads still work through the daemon (go-fuse falls back to them if the
// kernel refuses the backing file).
type passthroughHandle struct {
	fileHandle
	backing Backing // nil: the inode's backing file is another handle's
}

var _ = (gofs.FilePassthroughFder)((*passthroughHandle)(nil))

// PassthroughFd implements gofs.FilePassthroughFder. go-fuse asks only
// the first passthrough open of an inode; later ones share its backing.
func (p *passthroughHandle) PassthroughFd() (int, bool) {
	if p.backing == nil {
		return -1, false
	}
	return int(p.backing.File().Fd()), true
}

// Release implements gofs.FileReleaser.
func (p *passthroughHandle) Release(ctx context.Context) syscall.Errno {
	errno := p.fileHandle.Release(ctx)
	if p.backing != nil {
		p.backing.Close()
	}
	return errno
}

// probeBacking is Mount's backingState.probe: register f with the kernel
// as a backing file, and let it go again.
func probeBacking(server *fuse.Server) func(*os.File) error {
	return func(f *os.File) error {
		id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
		if errno != 0 {
			return fmt.Errorf("register backing file: %w", syscall.Errno(errno))
		}
		if errno := server.UnregisterBackingFd(id); errno != 0 {
			return fmt.Errorf("unregister backing file: %w", syscall.Errno(errno))
		}
		return nil
	}
}
