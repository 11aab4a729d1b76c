package fs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// fileState is everything the volume knows about one open file, shared by
// all its handles: the committed version reads are pinned to and, once
// the file is first modified, a write session: a local temporary file
// holding the file's whole new content, uploaded on flush, fsync and
// release.
//
// Fields marked "mu+v.mu" are written with both locks held (mu first) and
// may be read holding either.
type fileState struct {
	// id orders lock acquisition when several states are locked at once
	// (rename): lower id first. Immutable.
	id uint64

	// mu serializes content changes and uploads. Readers of the local
	// content take it shared; writers, truncates and uploads exclusive.
	mu sync.RWMutex

	name     string        // mu+v.mu: current blob name (follows renames)
	entry    Entry         // mu+v.mu: what Lookup and getattr report
	detached bool          // mu+v.mu: unlinked or renamed over: never uploaded again
	refs     int           // GUARDED_BY(v.mu): handles plus temporary pins
	pin      blob.ETag     // GUARDED_BY(mu): committed version that blob reads use
	sess     *writeSession // GUARDED_BY(mu): the content being modified; nil until first modified
	dirty    bool          // GUARDED_BY(mu): the session's content differs from the blob
	// failed: an upload failure was reported to the application since the
	// last modification. Release then does not retry behind its back (the
	// application may already be recovering in its own way).
	failed bool // GUARDED_BY(mu)
	// writeErr is set when a write or truncate returned an error to the
	// application: the content is not what it meant to write, so it is
	// never committed (flush, fsync and close fail too) until the file
	// is truncated to zero and written again.
	writeErr error // GUARDED_BY(mu)
}

// pin returns name's open state with an extra reference, or nil.
func (v *Volume) pin(name string) *fileState {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.open[name]
	if st != nil {
		st.refs++
	}
	return st
}

// newStateLocked registers a fresh state for name with one reference.
// Requires v.mu.
func (v *Volume) newStateLocked(name string, e Entry) *fileState {
	v.nextID++
	st := &fileState{id: v.nextID, name: name, entry: e, pin: e.ETag, refs: 1}
	v.open[name] = st
	return st
}

// lockNamed pins and locks the open states of names (nil for a name not
// open), taking the locks in id order, and checks once they are held that
// every name still maps to what was locked: a rename, unlink or open may
// have slipped in between pinning and locking, in which case it tries
// again. unlockAll undoes it.
func (v *Volume) lockNamed(names ...string) []*fileState {
	for {
		states := make([]*fileState, len(names))
		for i, n := range names {
			states[i] = v.pin(n)
		}
		lockInOrder(states)
		v.mu.Lock()
		ok := true
		for i, n := range names {
			if st := v.open[n]; st != states[i] || (st != nil && (st.detached || st.name != n)) {
				ok = false
			}
		}
		v.mu.Unlock()
		if ok {
			return states
		}
		v.unlockAll(states)
	}
}

// pinTree pins and locks (in id order) every open state under dir.
func (v *Volume) pinTree(dir string) []*fileState {
	v.mu.Lock()
	var states []*fileState
	for name, st := range v.open {
		if underDir(name, dir) {
			st.refs++
			states = append(states, st)
		}
	}
	v.mu.Unlock()
	lockInOrder(states)
	return states
}

// lockInOrder locks the distinct non-nil states in id order.
func lockInOrder(states []*fileState) {
	sorted := slices.DeleteFunc(slices.Clone(states), func(st *fileState) bool { return st == nil })
	slices.SortFunc(sorted, func(a, b *fileState) int { return cmp.Compare(a.id, b.id) })
	for i, st := range sorted {
		if i > 0 && st == sorted[i-1] {
			continue
		}
		st.mu.Lock()
	}
}

// unlockAll unpins and unlocks what lockNamed or pinTree returned.
func (v *Volume) unlockAll(states []*fileState) {
	for i, st := range states {
		if st == nil || slices.Contains(states[:i], st) {
			continue
		}
		v.unpin(st)
		st.mu.Unlock()
	}
}

// unpin drops a reference taken by pin, acquire or open. Requires st.mu
// held exclusively: the last reference closes the local content.
func (v *Volume) unpin(st *fileState) {
	v.mu.Lock()
	st.refs--
	if st.refs > 0 {
		v.mu.Unlock()
		return
	}
	if v.open[st.name] == st {
		delete(v.open, st.name)
	}
	sess := st.sess
	st.sess = nil
	v.mu.Unlock()
	if st.dirty && !st.detached {
		v.log.Warn("blobfs: last handle closed with unsaved data; it is lost", "name", st.name)
	}
	if sess != nil && !v.keepRecent(st.name, st.pin, sess, st.dirty || st.detached) {
		sess.close()
	}
}

// detachLocked cuts st off its name: it will never be uploaded again.
// Requires st.mu and v.mu.
func (v *Volume) detachLocked(st *fileState) {
	st.detached = true
	if v.open[st.name] == st {
		delete(v.open, st.name)
	}
}

// acquire returns name's open state with a new reference, creating it from
// a lookup if the file is not open yet: cached within AttrTTL for
// readers, fresh (one HEAD) for writers, whose commit is conditional on
// the version they start from (close-to-open: a writer must not lose to
// a change it could not have seen).
func (v *Volume) acquire(ctx context.Context, name string, fresh bool) (*fileState, error) {
	if st := v.pin(name); st != nil {
		return st, nil
	}
	var e Entry
	var err error
	if fresh {
		e, err = v.fetch(ctx, name)
		if err == nil || errors.Is(err, blob.ErrNotFound) {
			v.mu.Lock()
			v.putLocked(name, e, err != nil, time.Now())
			v.mu.Unlock()
		}
	} else {
		e, err = v.Lookup(ctx, name)
	}
	if err != nil {
		return nil, err
	}
	if e.Dir {
		return nil, fmt.Errorf("open %q: %w", name, syscall.EISDIR)
	}
	if e.Symlink {
		return nil, fmt.Errorf("open %q: symbolic link: %w", name, syscall.ELOOP)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if st := v.open[name]; st != nil {
		st.refs++
		return st, nil
	}
	return v.newStateLocked(name, e), nil
}

// Handle is one open file description. Reads of a file nobody has
// modified go to the Reader as ranged reads pinned to the ETag seen at
// open; once the file is modified, all handles of it read and write the
// local content.
type Handle struct {
	v        *Volume
	st       *fileState
	append   bool
	released atomic.Bool
}

// Open opens file name. flags are open(2) flags: O_TRUNC truncates
// (uploaded at flush), O_APPEND makes every write land at the end.
func (v *Volume) Open(ctx context.Context, name string, flags int) (*Handle, error) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	trunc := flags&syscall.O_TRUNC != 0
	if v.opts.ReadOnly && (writable || trunc) {
		return nil, errROFS("open", name)
	}
	st, err := v.acquire(ctx, name, writable || trunc)
	if err != nil {
		return nil, err
	}
	h := &Handle{v: v, st: st, append: flags&syscall.O_APPEND != 0}
	st.mu.RLock()
	archived := st.entry.Archived && st.sess == nil
	st.mu.RUnlock()
	if archived && !trunc {
		// Reads would fail on every request; say why once, at open.
		// Replacing the content (O_TRUNC) needs no read and is allowed.
		h.Release(ctx)
		return nil, fmt.Errorf("open %q (access tier %s): %w", name, blob.TierArchive, blob.ErrArchived)
	}
	if trunc {
		st.mu.Lock()
		err := v.truncateLocked(ctx, st, 0)
		st.mu.Unlock()
		if err != nil {
			h.Release(ctx)
			return nil, fmt.Errorf("open %q: truncate: %w", name, err)
		}
	}
	return h, nil
}

// Create creates file name as an empty blob right away (as BlobFuse2
// does), so that listings and other mounts see it and O_EXCL is exclusive
// across mounts (IfNoneMatchAny). Without O_EXCL an existing file is
// opened instead, as open(2) does.
func (v *Volume) Create(ctx context.Context, name string, flags int) (*Handle, error) {
	if v.opts.ReadOnly {
		return nil, errROFS("create", name)
	}
	excl := flags&syscall.O_EXCL != 0
	v.mu.Lock()
	_, isOpen := v.open[name]
	v.mu.Unlock()
	var a blob.Attrs
	err := fmt.Errorf("create %q: open here: %w", name, blob.ErrExists)
	if !isOpen {
		a, err = v.store.Put(ctx, name, nil, blob.WriteOptions{Conditions: blob.Conditions{IfNoneMatchAny: true}})
	}
	if errors.Is(err, blob.ErrExists) && !excl {
		v.forget(name) // the kernel and our cache thought it missing
		return v.Open(ctx, name, flags)
	}
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", name, err)
	}
	e := entryOf(name, a)
	v.mu.Lock()
	st := v.open[name]
	if st != nil {
		// Opened between our check and the Put (the kernel locks the
		// directory, so only a direct Volume user can race): one state
		// per name, so join it.
		st.refs++
	} else {
		st = v.newStateLocked(name, e)
	}
	v.changedLocked(name, &e)
	v.mu.Unlock()
	return &Handle{v: v, st: st, append: flags&syscall.O_APPEND != 0}, nil
}

// Truncate sets file name's length through no handle (truncate(2)): the
// change is uploaded before Truncate returns.
func (v *Volume) Truncate(ctx context.Context, name string, size int64) error {
	if v.opts.ReadOnly {
		return errROFS("truncate", name)
	}
	h, err := v.Open(ctx, name, syscall.O_WRONLY)
	if err != nil {
		return err
	}
	err = h.Truncate(ctx, size)
	if err == nil {
		err = h.Flush(ctx)
	}
	return errors.Join(err, h.Release(ctx))
}

// Name is the file's current blob name (it follows renames).
func (h *Handle) Name() string {
	h.v.mu.Lock()
	defer h.v.mu.Unlock()
	return h.st.name
}

// Entry is the file's current view: local size while it has unsaved data.
func (h *Handle) Entry() Entry {
	h.v.mu.Lock()
	defer h.v.mu.Unlock()
	return h.st.entry
}

// committed returns the version the handle reads (the ETag pinned at open
// and its size); ok is false once the file has local changes.
func (h *Handle) committed() (etag blob.ETag, size int64, ok bool) {
	h.st.mu.RLock()
	defer h.st.mu.RUnlock()
	if h.st.sess != nil || h.st.dirty {
		return "", 0, false
	}
	return h.st.pin, h.st.entry.Size, true
}

// Dirty reports whether the file has data not yet uploaded.
func (h *Handle) Dirty() bool {
	h.st.mu.RLock()
	defer h.st.mu.RUnlock()
	return h.st.dirty
}

// ReadAt reads like io.ReaderAt. A file never modified here is read from
// the Reader, one ranged read of exactly the requested bytes pinned to
// the version seen at open (blob.ErrStale if it changed); never a whole-
// blob download for a small read.
func (h *Handle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	st, v := h.st, h.v
	st.mu.RLock()
	if st.sess != nil {
		defer st.mu.RUnlock()
		n, err := st.sess.readAt(ctx, p, off)
		if err != nil && !errors.Is(err, io.EOF) {
			err = fmt.Errorf("read %q at %d: %w", st.name, off, err)
		}
		return n, err
	}
	name, etag, size := st.name, st.pin, st.entry.Size
	st.mu.RUnlock()

	if off >= size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), size-off)]
	n, err := v.readBlob(ctx, name, etag, size, p, off)
	if errors.Is(err, io.EOF) {
		if n == len(p) {
			return n, nil
		}
		return n, io.EOF
	}
	if errors.Is(err, blob.ErrStale) {
		// Our idea of the file is out of date: let the next open look
		// again instead of failing the same way.
		v.forget(name)
	}
	if err != nil {
		return n, fmt.Errorf("read %q at %d: %w", name, off, err)
	}
	return n, nil
}

// WriteAt writes p at off (at the end for O_APPEND handles). The first
// modification of an existing blob copies its content into the local
// file (in parallel ranged reads), so later writes are local.
func (h *Handle) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	st, v := h.st, h.v
	if v.opts.ReadOnly {
		return 0, errROFS("write", h.Name())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := v.ensureSession(ctx, st, -1); err != nil {
		st.writeErr = err
		return 0, err
	}
	if h.append {
		off = st.sess.size
	}
	n, err := st.sess.write(ctx, st.name, p, off)
	if n > 0 {
		v.modifiedLocked(st)
	}
	if err != nil {
		st.writeErr = err
		return n, fmt.Errorf("write %q: %w", st.name, err)
	}
	return n, nil
}

// Truncate sets the file's length (ftruncate); uploaded at flush.
func (h *Handle) Truncate(ctx context.Context, size int64) error {
	if h.v.opts.ReadOnly {
		return errROFS("truncate", h.Name())
	}
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	return h.v.truncateLocked(ctx, h.st, size)
}

// Flush uploads unsaved data (close(2) of any descriptor of the handle).
// An upload error is returned here, so close fails; the data stays local
// and a later flush or fsync tries again.
func (h *Handle) Flush(ctx context.Context) error {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	return h.v.flushLocked(ctx, h.st)
}

// Fsync uploads unsaved data; when it returns nil the content is committed.
func (h *Handle) Fsync(ctx context.Context) error { return h.Flush(ctx) }

// Release ends the handle. Data still unsaved (written back after the last
// flush, as mmap writes can be) is uploaded unless a flush already
// reported a failure; the last handle's release drops the local content.
func (h *Handle) Release(ctx context.Context) error {
	if h.released.Swap(true) {
		return nil
	}
	st, v := h.st, h.v
	v.releases.Add(1)
	defer v.releases.Done()
	st.mu.Lock()
	defer st.mu.Unlock()
	var err error
	if st.dirty && !st.failed {
		err = v.flushLocked(ctx, st)
	}
	v.unpin(st)
	return err
}

// ensureSession starts the write session (see newSession), keeping the
// first keep bytes of the committed content (all of it for keep < 0).
// Requires st.mu.
func (v *Volume) ensureSession(ctx context.Context, st *fileState, keep int64) error {
	if st.sess != nil {
		return nil
	}
	sess, err := v.newSession(ctx, st, keep)
	if err != nil {
		return fmt.Errorf("start writing %q: %w", st.name, err)
	}
	st.sess = sess
	return nil
}

// readBlob reads committed content through the Reader, telling it the
// size when it wants to know (SizedReader).
func (v *Volume) readBlob(ctx context.Context, name string, etag blob.ETag, size int64, p []byte, off int64) (int, error) {
	if sr, ok := v.reader.(SizedReader); ok {
		return sr.ReadAtSized(ctx, name, etag, size, p, off)
	}
	return v.reader.ReadAt(ctx, name, etag, p, off)
}

// truncateLocked sets the local length, starting a session if needed.
// Truncating an unmodified file to its current length changes nothing and
// uploads nothing. Requires st.mu.
func (v *Volume) truncateLocked(ctx context.Context, st *fileState, size int64) error {
	if size < 0 {
		return fmt.Errorf("truncate %q to %d: %w", st.name, size, syscall.EINVAL)
	}
	if st.sess == nil && size == st.entry.Size {
		return nil
	}
	if err := v.ensureSession(ctx, st, size); err != nil {
		st.writeErr = err
		return err
	}
	if st.sess.size != size {
		if err := st.sess.truncate(ctx, size, st.sess.size); err != nil {
			st.writeErr = err
			return fmt.Errorf("truncate %q: %w", st.name, err)
		}
	}
	if size == 0 {
		// Nothing of what failed before is left: a fresh start.
		st.writeErr = nil
	}
	v.modifiedLocked(st)
	return nil
}

// modifiedLocked records a local modification. Requires st.mu.
func (v *Volume) modifiedLocked(st *fileState) {
	st.dirty, st.failed = true, false
	v.mu.Lock()
	st.entry.Size = st.sess.size
	st.entry.ModTime = time.Now()
	v.mu.Unlock()
}

// flushLocked uploads the local content if it differs from the blob.
// Requires st.mu.
func (v *Volume) flushLocked(ctx context.Context, st *fileState) error {
	if !st.dirty || st.detached {
		return nil
	}
	if st.writeErr != nil {
		st.failed = true
		return fmt.Errorf("upload %q: not committed, a write failed: %w", st.name, st.writeErr)
	}
	a, err := v.commit(ctx, st.name, st, v.writeCondition(st))
	if err != nil {
		st.failed = true
		return fmt.Errorf("upload %q: %w", st.name, err)
	}
	st.dirty = false
	st.pin = a.ETag
	e := entryOf(st.name, a)
	v.mu.Lock()
	st.entry = e
	v.changedLocked(st.name, &e)
	v.mu.Unlock()
	return nil
}

// writeCondition is what a commit of st requires of the blob: still the
// version the session started from (or was last committed as), so two
// writers on two mounts never interleave silently: the second commit
// fails with ESTALE and its data stays local.
func (v *Volume) writeCondition(st *fileState) blob.Conditions {
	if st.sess != nil && st.sess.base.etag != "" {
		return blob.Conditions{IfMatch: st.sess.base.etag}
	}
	return blob.Conditions{}
}

// commit commits st's session as blob name under cond, bounded by the
// upload timeout. A failed conditional commit is reported as
// blob.ErrStale (another writer won), whatever the service said first
// (its commit may also have discarded our uncommitted blocks).
// Requires st.mu.
func (v *Volume) commit(ctx context.Context, name string, st *fileState, cond blob.Conditions) (blob.Attrs, error) {
	ctx, cancel := v.uploadContext(ctx)
	defer cancel()
	a, err := st.sess.commit(ctx, name, cond)
	if err != nil && cond.IfMatch != "" && !errors.Is(err, blob.ErrStale) {
		if cur, serr := v.store.Stat(ctx, name); serr == nil && cur.ETag != cond.IfMatch {
			err = fmt.Errorf("%w (changed by another writer: %w)", blob.ErrStale, err)
		}
	}
	if err == nil {
		v.stats.commits.Add(1)
	}
	return a, err
}

// uploadContext bounds an upload by Options.UploadTimeout.
func (v *Volume) uploadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if v.opts.UploadTimeout > 0 {
		return context.WithTimeout(ctx, v.opts.UploadTimeout)
	}
	return context.WithCancel(ctx)
}
