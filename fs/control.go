package fs

import (
	"bytes"
	"context"
	"io"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/blobfs/blobfs/internal/control"
)

// ControlName is the control file at the root of every mount: a client
// (blobfs prefetch, running anywhere the mount is visible, as any user who
// may use the mount) opens it, sends a request and reads the answer, like
// JuiceFS's .control. The request goes in by write(2) on a read-write
// open, or by ioctl(2) (control.IoctlWriteCmd) on a read-only one: a
// read-only mount — a pod's readOnly volumeMount, `mount --read-only` —
// refuses a read-write open with EROFS before FUSE sees it, but lets
// ioctls through. The name never reaches the store: it is answered before
// any blob lookup, and it is not listed. (A blob of that name at the
// container's root, were there one, is shadowed.)
const ControlName = ".blobfs-control"

// ControlFunc serves one client of the control file. Reads from conn
// return what the client writes (io.EOF once it has closed the file);
// writes to conn are what the client reads. ctx ends when the client
// closes the file or the mount goes away. When ControlFunc returns, the
// client reads end of file.
type ControlFunc func(ctx context.Context, conn io.ReadWriter)

// controls maps a mounted Volume to its control server. It lives here
// rather than in Options so that the control channel, which is wired
// after the mount is up, needs no change to the volume.
var controls sync.Map // *Volume → ControlFunc

// ServeControl makes the mount's control file answer with f. Until it is
// called, opening the control file fails with EAGAIN. The registration
// ends with the mount.
func (m *Mounted) ServeControl(f ControlFunc) {
	controls.Store(m.vol, f)
	go func() {
		<-m.done
		controls.Delete(m.vol)
	}()
}

// controlNode is the control file.
type controlNode struct {
	gofs.Inode
	vol *Volume
}

var (
	_ = (gofs.NodeGetattrer)((*controlNode)(nil))
	_ = (gofs.NodeSetattrer)((*controlNode)(nil))
	_ = (gofs.NodeOpener)((*controlNode)(nil))

	_ = (gofs.FileReader)((*controlHandle)(nil))
	_ = (gofs.FileWriter)((*controlHandle)(nil))
	_ = (gofs.FileReleaser)((*controlHandle)(nil))
	_ = (gofs.FileFlusher)((*controlHandle)(nil))
	_ = (gofs.FileIoctler)((*controlHandle)(nil))
)

// lookupControl answers the root's lookup of ControlName.
func (n *dirNode) lookupControl(ctx context.Context, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ch := n.GetChild(ControlName)
	if ch == nil {
		ch = n.NewPersistentInode(ctx, &controlNode{vol: n.vol}, gofs.StableAttr{Mode: syscall.S_IFREG})
	} else if _, ok := ch.Operations().(*controlNode); !ok {
		ch = n.NewPersistentInode(ctx, &controlNode{vol: n.vol}, gofs.StableAttr{Mode: syscall.S_IFREG})
	}
	ch.Operations().(*controlNode).fill(&out.Attr)
	// Never cache the entry long: nothing changes, but nothing is gained.
	return ch, 0
}

// isControl reports whether comp in directory n is the control file.
func (n *dirNode) isControl(comp string) bool {
	return comp == ControlName && n.IsRoot()
}

func (c *controlNode) fill(out *fuse.Attr) {
	// 0666 whatever the umask: everyone who can reach the mount's root may
	// drive prefetch, which only reads what the mount's identity reads.
	out.Mode = syscall.S_IFREG | 0o666
	out.Nlink = 1
	out.Uid, out.Gid = c.vol.opts.UID, c.vol.opts.GID
	t := c.vol.mounted
	out.SetTimes(&t, &t, &t)
	out.Blksize = 4096
}

// Getattr implements gofs.NodeGetattrer.
func (c *controlNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	c.fill(&out.Attr)
	return 0
}

// Setattr implements gofs.NodeSetattrer: O_TRUNC from a shell's `>` is
// accepted and means nothing.
func (c *controlNode) Setattr(_ context.Context, _ gofs.FileHandle, _ *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	c.fill(&out.Attr)
	return 0
}

// Open implements gofs.NodeOpener: every open is its own session.
func (c *controlNode) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	v, ok := controls.Load(c.vol)
	if !ok {
		return nil, 0, syscall.EAGAIN
	}
	// A request and its answer: read-write (the request written), or
	// read-only (the request sent by ioctl); write-only could not read
	// the answer.
	mode := flags & syscall.O_ACCMODE
	if mode != syscall.O_RDWR && mode != syscall.O_RDONLY {
		return nil, 0, syscall.EINVAL
	}
	s := newControlSession()
	go func() {
		defer s.finish()
		v.(ControlFunc)(s.ctx, controlConn{s})
	}()
	// Direct I/O: every read reaches us (no page cache, no size limit);
	// nonseekable: a stream.
	return &controlHandle{s: s, readOnly: mode == syscall.O_RDONLY}, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NONSEEKABLE, 0
}

// controlOutLimit bounds the answer bytes a slow client has not read yet;
// the server waits beyond it.
const controlOutLimit = 1 << 20

// controlSession is one open of the control file: a duplex stream between
// the client (FUSE reads and writes, through controlHandle) and the
// ControlFunc (through controlConn).
type controlSession struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// changed is closed (and replaced) whenever anything below changes.
	changed chan struct{} // GUARDED_BY(mu)
	in      bytes.Buffer  // GUARDED_BY(mu): written by the client, not yet read by the server
	out     bytes.Buffer  // GUARDED_BY(mu): written by the server, not yet read by the client
	inEOF   bool          // GUARDED_BY(mu): the client closed the file
	outEOF  bool          // GUARDED_BY(mu): the server is done
	sent    bool          // GUARDED_BY(mu): the client has sent request bytes
}

func newControlSession() *controlSession {
	ctx, cancel := context.WithCancel(context.Background())
	return &controlSession{ctx: ctx, cancel: cancel, changed: make(chan struct{})}
}

// signalLocked wakes every waiter.
func (s *controlSession) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// lockWhen returns with mu held once cond (checked under mu) holds, or
// with an error (mu not held) when ctx ends first.
func (s *controlSession) lockWhen(ctx context.Context, cond func() bool) error {
	s.mu.Lock()
	for !cond() {
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	return nil
}

// finish marks the server done: the client then reads end of file.
func (s *controlSession) finish() {
	s.mu.Lock()
	s.outEOF = true
	s.signalLocked()
	s.mu.Unlock()
}

// hangUp is the client's close: the server reads end of file and its
// context ends.
func (s *controlSession) hangUp() {
	s.mu.Lock()
	s.inEOF = true
	s.signalLocked()
	s.mu.Unlock()
	s.cancel()
}

// controlConn is the server's side of a session.
type controlConn struct{ s *controlSession }

// Read returns the client's request bytes, waiting for them.
func (c controlConn) Read(p []byte) (int, error) {
	s := c.s
	if err := s.lockWhen(s.ctx, func() bool { return s.in.Len() > 0 || s.inEOF }); err != nil {
		return 0, io.EOF
	}
	defer s.mu.Unlock()
	if s.in.Len() == 0 {
		return 0, io.EOF
	}
	n, _ := s.in.Read(p)
	return n, nil
}

// Write queues answer bytes for the client.
func (c controlConn) Write(p []byte) (int, error) {
	s := c.s
	if err := s.lockWhen(s.ctx, func() bool { return s.out.Len() < controlOutLimit || s.inEOF }); err != nil {
		return 0, io.ErrClosedPipe
	}
	defer s.mu.Unlock()
	if s.inEOF {
		return 0, io.ErrClosedPipe
	}
	s.out.Write(p)
	s.signalLocked()
	return len(p), nil
}

// put queues request bytes for the server: EPIPE once it is done.
func (s *controlSession) put(data []byte) syscall.Errno {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outEOF {
		return syscall.EPIPE
	}
	s.in.Write(data)
	s.sent = true
	s.signalLocked()
	return 0
}

// controlHandle is the client's side of a session: the FUSE file handle.
type controlHandle struct {
	s *controlSession
	// readOnly: opened O_RDONLY, so the request can only come by ioctl.
	readOnly bool
}

// Read implements gofs.FileReader: the answer, waiting for it; an
// interrupted wait is EINTR. End of the answer is a zero-byte read. On a
// read-only open, a read before any request bytes is EINVAL: nothing
// could ever answer it (`cat .blobfs-control` fails rather than hangs).
func (h *controlHandle) Read(ctx context.Context, dest []byte, _ int64) (fuse.ReadResult, syscall.Errno) {
	s := h.s
	if h.readOnly {
		s.mu.Lock()
		sent := s.sent
		s.mu.Unlock()
		if !sent {
			return nil, syscall.EINVAL
		}
	}
	if err := s.lockWhen(ctx, func() bool { return s.out.Len() > 0 || s.outEOF }); err != nil {
		return nil, syscall.EINTR
	}
	defer s.mu.Unlock()
	n, _ := s.out.Read(dest)
	s.signalLocked()
	return fuse.ReadResultData(dest[:n]), 0
}

// Write implements gofs.FileWriter: request bytes for the server.
func (h *controlHandle) Write(_ context.Context, data []byte, _ int64) (uint32, syscall.Errno) {
	if errno := h.s.put(data); errno != 0 {
		return 0, errno
	}
	return uint32(len(data)), 0
}

// Ioctl implements gofs.FileIoctler: control.IoctlWriteCmd(n) carries n
// request bytes, exactly as a write of them would (the kernel copies the
// n bytes _IOC_SIZE names from the caller, so input is all of them). It
// is how a client on a read-only open sends its request; any other
// command is ENOTTY, as for a file with no ioctls.
func (h *controlHandle) Ioctl(_ context.Context, cmd uint32, _ uint64, input []byte, _ []byte) (int32, syscall.Errno) {
	n, ok := control.ParseIoctlWriteCmd(cmd)
	if !ok {
		return 0, syscall.ENOTTY
	}
	if len(input) != n {
		return 0, syscall.EINVAL
	}
	if errno := h.s.put(input); errno != 0 {
		return 0, errno
	}
	return 0, 0
}

// Flush implements gofs.FileFlusher: a close of one descriptor (there may
// be dups) ends nothing; Release does.
func (h *controlHandle) Flush(context.Context) syscall.Errno { return 0 }

// Release implements gofs.FileReleaser: the client is gone, so its
// operation is cancelled.
func (h *controlHandle) Release(context.Context) syscall.Errno {
	h.s.hangUp()
	return 0
}
