package fs

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/blobfs/blobfs/blob"
)

// The go-fuse nodes. They translate: kernel request → Volume call →
// errno (through Volume.errno and toErrno, the one error map). No storage logic lives
// here.
//
// Contexts: reads, lookups and listings stop on the kernel's interrupt
// only when the caller is dying (Volume.interruptible, fs/interrupt.go):
// a harmless signal must not turn stat(2) into EINTR, which nothing
// retries. Mutations run on context.WithoutCancel: they
// are multi-request sequences (copy then delete, stage then commit) that
// must not stop half-way, and close(2) is not retried on EINTR by anyone,
// so an interrupted upload would turn into silently lost data.

// node is what directories and files share.
type node struct {
	gofs.Inode
	vol *Volume
}

// dirNode is a directory: the root, a marker blob, or an implicit prefix.
type dirNode struct {
	node
}

// symlinkNode is a symbolic link (a blob holding its target).
type symlinkNode struct {
	node
}

// fileNode is a regular file (one blob).
type fileNode struct {
	node

	mu sync.Mutex
	// cachedETag is the committed version whose bytes the kernel page
	// cache may hold for this inode: an open of the same version keeps
	// the cache (FOPEN_KEEP_CACHE), any other drops it.
	cachedETag blob.ETag // GUARDED_BY(mu)
	// passOpens and plainOpens count the open handles of each kind
	// (passthrough.go). GUARDED_BY(mu)
	passOpens, plainOpens int
}

var (
	_ = (gofs.NodeLookuper)((*dirNode)(nil))
	_ = (gofs.NodeGetattrer)((*dirNode)(nil))
	_ = (gofs.NodeSetattrer)((*dirNode)(nil))
	_ = (gofs.NodeOpendirHandler)((*dirNode)(nil))
	_ = (gofs.NodeCreater)((*dirNode)(nil))
	_ = (gofs.NodeMkdirer)((*dirNode)(nil))
	_ = (gofs.NodeUnlinker)((*dirNode)(nil))
	_ = (gofs.NodeRmdirer)((*dirNode)(nil))
	_ = (gofs.NodeRenamer)((*dirNode)(nil))
	_ = (gofs.NodeStatfser)((*dirNode)(nil))
	_ = (gofs.NodeSymlinker)((*dirNode)(nil))

	_ = (gofs.NodeReadlinker)((*symlinkNode)(nil))
	_ = (gofs.NodeGetattrer)((*symlinkNode)(nil))
	_ = (gofs.NodeSetattrer)((*symlinkNode)(nil))

	_ = (gofs.NodeGetattrer)((*fileNode)(nil))
	_ = (gofs.NodeSetattrer)((*fileNode)(nil))
	_ = (gofs.NodeOpener)((*fileNode)(nil))
	_ = (gofs.NodeStatfser)((*fileNode)(nil))

	_ = (gofs.FileReader)((*fileHandle)(nil))
	_ = (gofs.FileWriter)((*fileHandle)(nil))
	_ = (gofs.FileFlusher)((*fileHandle)(nil))
	_ = (gofs.FileFsyncer)((*fileHandle)(nil))
	_ = (gofs.FileReleaser)((*fileHandle)(nil))

	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
	_ = (gofs.FileReleasedirer)((*dirHandle)(nil))
)

// blobName is this node's blob name, from its place in the inode tree
// (go-fuse moves nodes on rename, so the tree is the truth). A node cut
// out of the tree (unlinked while open) has no name: ENOENT.
func (n *node) blobName() (string, syscall.Errno) {
	var segs []string
	for p := &n.Inode; !p.IsRoot(); {
		comp, parent := p.Parent()
		if parent == nil {
			return "", syscall.ENOENT
		}
		segs = append(segs, comp)
		p = parent
	}
	slices.Reverse(segs)
	return strings.Join(segs, "/"), 0
}

// fillAttr turns an Entry into kernel attributes.
func (v *Volume) fillAttr(out *fuse.Attr, e Entry) {
	switch {
	case e.Dir:
		out.Mode = syscall.S_IFDIR | (0o777 &^ v.opts.Umask)
		out.Size = 4096
	case e.Symlink:
		out.Mode = syscall.S_IFLNK | 0o777
		out.Size = uint64(e.Size)
	default:
		out.Mode = syscall.S_IFREG | (0o666 &^ v.opts.Umask)
		out.Size = uint64(e.Size)
	}
	// One link, also for directories: st_nlink < 2 tells find(1) and
	// fts not to infer subdirectory counts from it.
	out.Nlink = 1
	out.Uid, out.Gid = v.opts.UID, v.opts.GID
	mt := e.ModTime
	if mt.IsZero() {
		mt = v.mounted
	}
	out.SetTimes(&mt, &mt, &mt)
	// st_blksize steers stdio and Python's buffer sizes: ask for
	// requests as large as the mount takes.
	out.Blksize = uint32(v.opts.MaxWrite)
	out.Blocks = (out.Size + 511) / 512
}

// child returns the inode for component comp described by e, reusing the
// one already in the tree when its type still matches, so that the kernel
// keeps one inode (and its page cache) per file.
func (n *dirNode) child(ctx context.Context, comp string, e Entry) *gofs.Inode {
	mode := fileType(e)
	if ch := n.GetChild(comp); ch != nil && ch.Mode() == mode {
		return ch
	}
	var ops gofs.InodeEmbedder
	switch mode {
	case syscall.S_IFDIR:
		ops = &dirNode{node{vol: n.vol}}
	case syscall.S_IFLNK:
		ops = &symlinkNode{node{vol: n.vol}}
	default:
		ops = &fileNode{node: node{vol: n.vol}}
	}
	return n.NewInode(ctx, ops, gofs.StableAttr{Mode: mode})
}

// fileType is the S_IFMT bits of e.
func fileType(e Entry) uint32 {
	switch {
	case e.Dir:
		return syscall.S_IFDIR
	case e.Symlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

// Lookup implements gofs.NodeLookuper.
func (n *dirNode) Lookup(ctx context.Context, comp string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx, done := n.vol.interruptible(ctx)
	defer done()
	if n.isControl(comp) {
		return n.lookupControl(ctx, out) // fs/control.go
	}
	dir, errno := n.blobName()
	if errno != 0 {
		return nil, errno
	}
	name, err := newChild(dir, comp)
	if err != nil {
		if errors.Is(err, syscall.ENAMETOOLONG) {
			return nil, syscall.ENAMETOOLONG
		}
		return nil, syscall.ENOENT // no blob can have this name
	}
	e, err := n.vol.Lookup(ctx, name)
	if err != nil {
		return nil, n.vol.errno("lookup", name, err)
	}
	n.vol.fillAttr(&out.Attr, e)
	return n.child(ctx, comp, e), 0
}

// Getattr implements gofs.NodeGetattrer.
func (n *dirNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx, done := n.vol.interruptible(ctx)
	defer done()
	name, errno := n.blobName()
	if errno != 0 {
		return errno
	}
	e, err := n.vol.Lookup(ctx, name)
	if err != nil {
		return n.vol.errno("getattr", name, err)
	}
	if !e.Dir {
		return syscall.ESTALE // became a file elsewhere; the next lookup sees it
	}
	n.vol.fillAttr(&out.Attr, e)
	return 0
}

// Setattr implements gofs.NodeSetattrer. chmod, chown and utimes are
// accepted and ignored, as BlobFuse2 does on flat-namespace accounts
// (fail-unsupported-op defaults to false): cp -a, rsync -a and tar keep
// working, and attributes keep coming from the mount options.
func (n *dirNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return syscall.EISDIR
	}
	if n.vol.ReadOnly() {
		return syscall.EROFS
	}
	return n.Getattr(ctx, nil, out)
}

// OpendirHandle implements gofs.NodeOpendirHandler: the whole listing is
// read at opendir (every page), so errors surface there and READDIRPLUS
// can answer each entry's lookup from it.
func (n *dirNode) OpendirHandle(ctx context.Context, _ uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ctx, done := n.vol.interruptible(ctx)
	defer done()
	dir, errno := n.blobName()
	if errno != 0 {
		return nil, 0, errno
	}
	ents, err := n.vol.ReadDir(ctx, dir)
	if err != nil {
		return nil, 0, n.vol.errno("readdir", dir, err)
	}
	return &dirHandle{node: n, dir: dir, entries: ents}, 0, 0
}

// Create implements gofs.NodeCreater.
func (n *dirNode) Create(ctx context.Context, comp string, flags uint32, _ uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.isControl(comp) {
		return nil, nil, 0, syscall.EEXIST // the control file always exists
	}
	ctx = context.WithoutCancel(ctx)
	dir, errno := n.blobName()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	name, err := newChild(dir, comp)
	if err != nil {
		return nil, nil, 0, n.vol.errno("create", name, err)
	}
	h, err := n.vol.Create(ctx, name, int(flags))
	if err != nil {
		return nil, nil, 0, n.vol.errno("create", name, err)
	}
	fn := &fileNode{node: node{vol: n.vol}}
	ch := n.NewInode(ctx, fn, gofs.StableAttr{Mode: syscall.S_IFREG})
	if existing, ok := ch.Operations().(*fileNode); ok {
		fn = existing
	}
	fn.mu.Lock()
	fn.plainOpens++ // a writer: no passthrough open of this inode meanwhile
	fn.mu.Unlock()
	n.vol.fillAttr(&out.Attr, h.Entry())
	var fuseFlags uint32
	if n.vol.opts.DirectIO {
		fuseFlags |= fuse.FOPEN_DIRECT_IO
	}
	return ch, &fileHandle{h: h, node: fn}, fuseFlags, 0
}

// Mkdir implements gofs.NodeMkdirer.
func (n *dirNode) Mkdir(ctx context.Context, comp string, _ uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = context.WithoutCancel(ctx)
	dir, errno := n.blobName()
	if errno != 0 {
		return nil, errno
	}
	name, err := newChild(dir, comp)
	if err != nil {
		return nil, n.vol.errno("mkdir", name, err)
	}
	e, err := n.vol.Mkdir(ctx, name)
	if err != nil {
		return nil, n.vol.errno("mkdir", name, err)
	}
	n.vol.fillAttr(&out.Attr, e)
	return n.NewInode(ctx, &dirNode{node{vol: n.vol}}, gofs.StableAttr{Mode: syscall.S_IFDIR}), 0
}

// Symlink implements gofs.NodeSymlinker.
func (n *dirNode) Symlink(ctx context.Context, target, comp string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = context.WithoutCancel(ctx)
	dir, errno := n.blobName()
	if errno != 0 {
		return nil, errno
	}
	name, err := newChild(dir, comp)
	if err != nil {
		return nil, n.vol.errno("symlink", name, err)
	}
	e, err := n.vol.Symlink(ctx, name, target)
	if err != nil {
		return nil, n.vol.errno("symlink", name, err)
	}
	n.vol.fillAttr(&out.Attr, e)
	return n.NewInode(ctx, &symlinkNode{node{vol: n.vol}}, gofs.StableAttr{Mode: syscall.S_IFLNK}), 0
}

// Readlink implements gofs.NodeReadlinker.
func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx, done := n.vol.interruptible(ctx)
	defer done()
	name, errno := n.blobName()
	if errno != 0 {
		return nil, errno
	}
	target, err := n.vol.Readlink(ctx, name)
	if err != nil {
		return nil, n.vol.errno("readlink", name, err)
	}
	return []byte(target), 0
}

// Getattr implements gofs.NodeGetattrer.
func (n *symlinkNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx, done := n.vol.interruptible(ctx)
	defer done()
	name, errno := n.blobName()
	if errno != 0 {
		return errno
	}
	e, err := n.vol.Lookup(ctx, name)
	if err != nil {
		return n.vol.errno("getattr", name, err)
	}
	if !e.Symlink {
		return syscall.ESTALE // replaced by another kind elsewhere
	}
	n.vol.fillAttr(&out.Attr, e)
	return 0
}

// Setattr implements gofs.NodeSetattrer: lchown and utimes on a link are
// accepted and ignored, like those on files.
func (n *symlinkNode) Setattr(ctx context.Context, _ gofs.FileHandle, _ *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.vol.ReadOnly() {
		return syscall.EROFS
	}
	return n.Getattr(ctx, nil, out)
}

// existingChild is the blob name of an existing component; a component no
// blob can have cannot exist.
func (n *dirNode) existingChild(comp string) (string, syscall.Errno) {
	dir, errno := n.blobName()
	if errno != 0 {
		return "", errno
	}
	name, err := newChild(dir, comp)
	if err != nil {
		return "", syscall.ENOENT
	}
	return name, 0
}

// Unlink implements gofs.NodeUnlinker.
func (n *dirNode) Unlink(ctx context.Context, comp string) syscall.Errno {
	name, errno := n.existingChild(comp)
	if errno != 0 {
		return errno
	}
	return n.vol.errno("unlink", name, n.vol.Unlink(context.WithoutCancel(ctx), name))
}

// Rmdir implements gofs.NodeRmdirer.
func (n *dirNode) Rmdir(ctx context.Context, comp string) syscall.Errno {
	name, errno := n.existingChild(comp)
	if errno != 0 {
		return errno
	}
	return n.vol.errno("rmdir", name, n.vol.Rmdir(context.WithoutCancel(ctx), name))
}

// renameNoreplace is RENAME_NOREPLACE from renameat2(2).
const renameNoreplace = 0x1

// Rename implements gofs.NodeRenamer. RENAME_EXCHANGE and RENAME_WHITEOUT
// are not supported (EINVAL, as renameat2 documents for unsupported
// flags): blob storage has no atomic swap.
func (n *dirNode) Rename(ctx context.Context, comp string, newParent gofs.InodeEmbedder, newComp string, flags uint32) syscall.Errno {
	if flags&^renameNoreplace != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	src, errno := n.existingChild(comp)
	if errno != 0 {
		return errno
	}
	dstDir, errno := np.blobName()
	if errno != 0 {
		return errno
	}
	dst, err := newChild(dstDir, newComp)
	if err != nil {
		return n.vol.errno("rename", dst, err)
	}
	err = n.vol.Rename(context.WithoutCancel(ctx), src, dst, flags&renameNoreplace != 0)
	return n.vol.errno("rename", src, err)
}

// statfs fills out from the volume's StatfsDir.
func (n *node) statfs(out *fuse.StatfsOut) syscall.Errno {
	st, err := n.vol.Statfs()
	if err != nil {
		return n.vol.errno("statfs", "", err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize = uint32(st.Bsize), uint32(st.Frsize)
	out.NameLen = maxComponent
	return 0
}

// Statfs implements gofs.NodeStatfser.
func (n *dirNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno { return n.statfs(out) }

// Statfs implements gofs.NodeStatfser.
func (n *fileNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno { return n.statfs(out) }

// Getattr implements gofs.NodeGetattrer. With an open handle (fstat, or the
// kernel refreshing a file that is open) the handle's view answers,
// including unsaved size; that also covers files unlinked while open.
func (n *fileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fh, ok := f.(*fileHandle); ok && fh != nil {
		n.vol.fillAttr(&out.Attr, fh.h.Entry())
		return 0
	}
	ctx, done := n.vol.interruptible(ctx)
	defer done()
	name, errno := n.blobName()
	if errno != 0 {
		return errno
	}
	e, err := n.vol.Lookup(ctx, name)
	if err != nil {
		return n.vol.errno("getattr", name, err)
	}
	if e.Dir || e.Symlink {
		return syscall.ESTALE // became another kind elsewhere
	}
	n.vol.fillAttr(&out.Attr, e)
	return 0
}

// Setattr implements gofs.NodeSetattrer: size changes truncate (through
// the handle when there is one, uploaded at its flush; otherwise uploaded
// before returning); mode, owner and times are accepted and ignored (see
// dirNode.Setattr).
func (n *fileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = context.WithoutCancel(ctx)
	if n.vol.ReadOnly() {
		return syscall.EROFS
	}
	fh, _ := f.(*fileHandle)
	if size, ok := in.GetSize(); ok {
		var err error
		name := ""
		if fh != nil {
			err = fh.h.Truncate(ctx, int64(size))
		} else {
			var errno syscall.Errno
			if name, errno = n.blobName(); errno != 0 {
				return errno
			}
			err = n.vol.Truncate(ctx, name, int64(size))
		}
		if err != nil {
			return n.vol.errno("truncate", name, err)
		}
	}
	return n.Getattr(ctx, f, out)
}

// Open implements gofs.NodeOpener.
func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	name, errno := n.blobName()
	if errno != 0 {
		return nil, 0, errno
	}
	readOnly := flags&(syscall.O_ACCMODE|syscall.O_TRUNC) == syscall.O_RDONLY
	if readOnly {
		var done func()
		ctx, done = n.vol.interruptible(ctx)
		defer done()
	} else {
		ctx = context.WithoutCancel(ctx)
		// A writer is refused, or counted, before it opens: Volume.Open
		// applies O_TRUNC, which must not happen to a file it will not
		// get, and a passthrough open must not slip in meanwhile.
		n.mu.Lock()
		_, err := n.openModeLocked(true, nil)
		if err == nil {
			n.plainOpens++
		}
		n.mu.Unlock()
		if err != nil {
			n.vol.log.Info("blobfs: open for writing refused", "name", name, "err", err)
			return nil, 0, syscall.ETXTBSY
		}
	}
	h, err := n.vol.Open(ctx, name, int(flags))
	if err != nil {
		if !readOnly {
			n.mu.Lock()
			n.plainOpens--
			n.mu.Unlock()
		}
		return nil, 0, n.vol.errno("open", name, err)
	}
	var backing Backing
	if readOnly {
		// No backing while the file is open through the daemon: the
		// kernel refuses to mix, so this open goes through the daemon
		// too, and preparing one would only cost a lease and, when the
		// file is being fetched, a wait for it (awaitInFlight in the
		// cache). A file open for passthrough still gets one: each
		// handle holds its own lease on the blocks the kernel reads.
		// Prepared without n.mu (it may validate the identity with a
		// HEAD, or wait for fetches); whether it is used is decided
		// under n.mu below.
		n.mu.Lock()
		plain := n.plainOpens > 0
		n.mu.Unlock()
		if !plain {
			backing = n.vol.openBacking(ctx, h)
		}
	}
	var fuseFlags uint32
	if n.vol.opts.DirectIO {
		fuseFlags |= fuse.FOPEN_DIRECT_IO
	}
	if readOnly {
		// Closing a read-only descriptor has nothing to upload: spare
		// the kernel the FLUSH round trip (DataLoader workers open and
		// close files by the million).
		fuseFlags |= fuse.FOPEN_NOFLUSH
	}
	// The service quotes ETags in headers (HEAD) but not in listings, and
	// the entry may come from either: compare the value.
	etag := blob.ETag(strings.Trim(string(h.Entry().ETag), `"`))
	if h.Dirty() {
		etag = "" // the page cache holds local writes, not a version
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if etag != "" && etag == n.cachedETag {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	n.cachedETag = etag
	if !readOnly {
		return &fileHandle{h: h, node: n}, fuseFlags, 0 // counted above
	}
	pass, _ := n.openModeLocked(false, backing) // a reader is never refused
	if pass {
		n.passOpens++
		n.vol.backing.opens.Add(1)
		return &passthroughHandle{fileHandle: fileHandle{h: h, node: n, pass: true}, backing: backing}, fuseFlags, 0
	}
	if backing != nil {
		backing.Close()
	}
	n.plainOpens++
	return &fileHandle{h: h, node: n}, fuseFlags, 0
}

// fileHandle is an open file: a Volume Handle.
type fileHandle struct {
	h    *Handle
	node *fileNode
	pass bool // counted in node.passOpens (else plainOpens)
}

// Read implements gofs.FileReader.
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx, done := f.h.v.interruptible(ctx)
	defer done()
	n, err := f.h.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, f.h.v.errno("read", f.h.Name(), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write implements gofs.FileWriter.
func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := f.h.WriteAt(context.WithoutCancel(ctx), data, off)
	if err != nil {
		return uint32(n), f.h.v.errno("write", f.h.Name(), err)
	}
	return uint32(n), 0
}

// Flush implements gofs.FileFlusher: every close(2) uploads unsaved data,
// and an upload failure makes that close fail.
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno {
	return f.h.v.errno("flush", f.h.Name(), f.h.Flush(context.WithoutCancel(ctx)))
}

// Fsync implements gofs.FileFsyncer.
func (f *fileHandle) Fsync(ctx context.Context, _ uint32) syscall.Errno {
	return f.h.v.errno("fsync", f.h.Name(), f.h.Fsync(context.WithoutCancel(ctx)))
}

// Release implements gofs.FileReleaser. Nobody waits for its answer, so a
// failure is only logged (by Errno).
func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	errno := f.h.v.errno("release", f.h.Name(), f.h.Release(context.WithoutCancel(ctx)))
	if n := f.node; n != nil {
		n.mu.Lock()
		if f.pass {
			n.passOpens--
		} else {
			n.plainOpens--
		}
		n.mu.Unlock()
	}
	return errno
}

// dirHandle is an open directory: a snapshot of its listing.
type dirHandle struct {
	node *dirNode
	dir  string

	mu      sync.Mutex
	entries []DirEntry // GUARDED_BY(mu)
	// next is the offset of the next entry: 0 ".", 1 "..", then
	// entries[next-2]. Offsets double as telldir cookies.
	next uint64 // GUARDED_BY(mu)
	// last is the entry Readdirent returned most recently: READDIRPLUS
	// asks to look it up right after.
	last *DirEntry // GUARDED_BY(mu)
}

// Readdirent implements gofs.FileReaddirenter.
func (d *dirHandle) Readdirent(context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	de := &fuse.DirEntry{Mode: syscall.S_IFDIR}
	switch i := d.next; {
	case i == 0:
		de.Name, de.Ino = ".", d.node.StableAttr().Ino
		d.last = nil
	case i == 1:
		de.Name = ".."
		if _, p := d.node.Parent(); p != nil {
			de.Ino = p.StableAttr().Ino
		} else {
			de.Ino = d.node.StableAttr().Ino
		}
		d.last = nil
	case i-2 < uint64(len(d.entries)):
		e := &d.entries[i-2]
		de.Name = e.Name
		de.Mode = fileType(e.Entry)
		if ch := d.node.GetChild(e.Name); ch != nil {
			de.Ino = ch.StableAttr().Ino
		}
		d.last = e
	default:
		return nil, 0
	}
	d.next++
	de.Off = d.next
	return de, 0
}

// Lookup implements gofs.FileLookuper: READDIRPLUS fills each entry's
// attributes from the listing instead of asking the store per entry.
func (d *dirHandle) Lookup(ctx context.Context, comp string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d.mu.Lock()
	last := d.last
	d.mu.Unlock()
	if last == nil || last.Name != comp {
		return d.node.Lookup(ctx, comp, out)
	}
	d.node.vol.fillAttr(&out.Attr, last.Entry)
	return d.node.child(ctx, comp, last.Entry), 0
}

// Seekdir implements gofs.FileSeekdirer. Rewinding (offset 0) lists the
// directory again, as rewinddir(3) promises to show changes.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	ctx, done := d.node.vol.interruptible(ctx)
	defer done()
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 {
		ents, err := d.node.vol.ReadDir(ctx, d.dir)
		if err != nil {
			return d.node.vol.errno("readdir", d.dir, err)
		}
		d.entries = ents
	}
	if off > uint64(len(d.entries))+2 {
		return syscall.EINVAL
	}
	d.next, d.last = off, nil
	return 0
}

// Fsyncdir implements gofs.FileFsyncdirer: directory changes are durable
// when the call that made them returns, so there is nothing to do (but
// failing would break the write-fsync-rename-fsync(dir) idiom).
func (d *dirHandle) Fsyncdir(context.Context, uint32) syscall.Errno { return 0 }

// Releasedir implements gofs.FileReleasedirer.
func (d *dirHandle) Releasedir(context.Context, uint32) {}
