package fs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blobfs/blobfs/blob"
)

// Entry is what the volume knows about one name: a file (one blob) or a
// directory (a marker blob, a prefix of other blobs, or both).
type Entry struct {
	// Name is the blob name, without trailing slash; "" is the root.
	Name string
	Dir  bool
	// Size is the file's length: the committed blob's, or the local
	// content's while a write session holds unsaved data.
	Size int64
	// ModTime is the blob's LastModified (the last local write while
	// dirty; the mount time for the root and implicit directories).
	ModTime time.Time
	// ETag is the file's committed version, or an explicit directory's
	// marker version; empty for implicit directories and the root.
	ETag blob.ETag
	// Marker reports a directory with an hdi_isfolder marker blob.
	Marker bool
	// Symlink reports a symbolic link: a blob holding the target, with
	// metadata is_symlink=true, as BlobFuse2 stores them.
	Symlink bool
	// Archived reports a blob in the offline Archive tier: listed and
	// stat-able, but opening it for reading fails until it is rehydrated.
	Archived bool
}

// metaIsSymlink is BlobFuse2's metadata key for a symbolic link blob.
const metaIsSymlink = "is_symlink"

// maxSymlink is the longest symlink target (PATH_MAX less the NUL).
const maxSymlink = 4095

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	// Name is the component inside the directory.
	Name string
	Entry
}

// cacheEntry is a name's cached lookup result, positive or negative.
type cacheEntry struct {
	entry    Entry
	negative bool
	expires  time.Time
}

// dirCache is one cached directory listing. entries is sorted by Name and
// never modified after it is cached (readers share it).
type dirCache struct {
	entries []DirEntry
	listed  time.Time
	expires time.Time
}

// Volume is the POSIX view of one container, independent of FUSE: it maps
// names to attributes (with TTL caches invalidated by our own writes),
// tracks open files and their write sessions, and implements the rename
// rules. The go-fuse nodes only translate calls into Volume calls and
// errors into errnos.
//
// Lock order: fileState.mu before Volume.mu; never take a fileState.mu
// while holding Volume.mu, and never hold Volume.mu across I/O. Several
// fileState.mu (rename) are taken in fileState.id order.
type Volume struct {
	store   blob.Store
	reader  Reader
	opts    Options
	log     *slog.Logger
	errs    errLog
	staging string
	// mounted is the ModTime of the root and of implicit directories,
	// which have no blob to take a time from.
	mounted time.Time

	backing backingState

	// releases counts Release calls in flight, which may upload after
	// the kernel has let go of the mount; Close waits for them.
	releases sync.WaitGroup

	mu sync.Mutex
	// gen counts invalidations; a lookup or listing started under an older
	// generation does not enter the cache (it may predate our own write).
	gen     uint64                // GUARDED_BY(mu)
	attrs   map[string]cacheEntry // GUARDED_BY(mu)
	dirs    map[string]*dirCache  // GUARDED_BY(mu)
	open    map[string]*fileState // GUARDED_BY(mu)
	nextID  uint64                // GUARDED_BY(mu): last fileState id handed out
	sweepAt int                   // GUARDED_BY(mu): attrs size that triggers a sweep
	// dirEntries approximates the entries held by dirs (only grows
	// between sweeps, which recount it).
	dirEntries int  // GUARDED_BY(mu)
	closed     bool // GUARDED_BY(mu)

	// recent holds the local content of files this mount committed and
	// closed moments ago, so that the rename that usually follows
	// (write x.tmp, fsync, close, rename to x) re-commits it under the
	// new name from local bytes instead of a server-side copy.
	recent      map[string]*recentFile // GUARDED_BY(mu)
	recentBytes int64                  // GUARDED_BY(mu)

	// warm counts lookup misses per directory (dirwarm.go).
	warm         map[string]*dirWarm // GUARDED_BY(mu)
	warmMaxPages int

	// bg outlives requests: background block stages run under it, and
	// Close cancels it.
	bg       context.Context
	bgCancel context.CancelFunc

	stats volumeStats
}

// NewVolume checks that the container exists (a missing one fails here
// with blob.ErrContainerNotFound rather than as ENODEV on every request)
// and prepares the staging directory. ctx bounds only these checks.
func NewVolume(ctx context.Context, opts Options) (*Volume, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if _, err := opts.Store.List(ctx, blob.ListOptions{MaxResults: 1}); err != nil {
		return nil, fmt.Errorf("probe container: %w", err)
	}
	if err := os.MkdirAll(opts.StagingDir, 0o700); err != nil {
		return nil, fmt.Errorf("staging dir: %w", err)
	}
	staging, err := os.MkdirTemp(opts.StagingDir, "blobfs-staging-")
	if err != nil {
		return nil, fmt.Errorf("staging dir: %w", err)
	}
	v := &Volume{
		store:   opts.Store,
		reader:  opts.Reader,
		opts:    opts,
		log:     opts.Logger,
		errs:    errLog{log: opts.Logger},
		staging: staging,
		mounted: time.Now(),
		attrs:   map[string]cacheEntry{},
		dirs:    map[string]*dirCache{},
		open:    map[string]*fileState{},
		recent:  map[string]*recentFile{},
		sweepAt: 1024,
		warm:    map[string]*dirWarm{},

		warmMaxPages: warmMaxPages,
	}
	v.bg, v.bgCancel = context.WithCancel(context.Background())
	return v, nil
}

// Close waits for background uploads, drops every open file's local
// content and removes the staging directory. The Volume must not be used
// afterwards; Mount calls it once the kernel has let go of the mount.
func (v *Volume) Close(ctx context.Context) error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.mu.Unlock()

	done := make(chan struct{})
	go func() { v.releases.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		v.log.Warn("blobfs: close: gave up waiting for releases to finish", "err", ctx.Err())
	}

	v.bgCancel()
	v.mu.Lock()
	states := make([]*fileState, 0, len(v.open))
	for _, st := range v.open {
		states = append(states, st)
	}
	v.open = map[string]*fileState{}
	for name, r := range v.recent {
		r.sess.close()
		delete(v.recent, name)
	}
	v.mu.Unlock()
	for _, st := range states {
		st.mu.Lock()
		if st.dirty && !st.detached {
			v.log.Warn("blobfs: close: discarding unsaved data", "name", st.name)
		}
		if st.sess != nil {
			st.sess.close()
			st.sess = nil
		}
		st.mu.Unlock()
	}
	return os.RemoveAll(v.staging)
}

// errno maps err to the errno the kernel should see, logging failures once
// per distinct message. op and name only label the log line.
func (v *Volume) errno(op, name string, err error) syscall.Errno {
	return v.errs.errno(op, name, err)
}

// ReadOnly reports whether mutations are refused.
func (v *Volume) ReadOnly() bool { return v.opts.ReadOnly }

func (v *Volume) rootEntry() Entry {
	return Entry{Dir: true, ModTime: v.mounted}
}

// entryOf turns a blob's attributes into an Entry.
func entryOf(name string, a blob.Attrs) Entry {
	e := Entry{Name: name, ModTime: a.LastModified, ETag: a.ETag}
	if a.IsDirMarker() {
		e.Dir, e.Marker = true, true
		return e
	}
	e.Size = a.Size
	e.Symlink = a.Metadata[metaIsSymlink] == "true"
	e.Archived = a.Archived()
	return e
}

func notFound(op, name string) error {
	return fmt.Errorf("%s %q: %w", op, name, blob.ErrNotFound)
}

func errROFS(op, name string) error {
	return fmt.Errorf("%s %q: read-only mount: %w", op, name, syscall.EROFS)
}

// putLocked caches a lookup result. Requires v.mu.
func (v *Volume) putLocked(name string, e Entry, negative bool, now time.Time) {
	ttl := v.opts.AttrTTL
	if negative {
		ttl = v.opts.NegativeTTL
	}
	if ttl <= 0 {
		delete(v.attrs, name)
		return
	}
	if len(v.attrs) >= v.sweepAt {
		v.sweepLocked(now)
	}
	v.attrs[name] = cacheEntry{entry: e, negative: negative, expires: now.Add(ttl)}
}

// Cache bounds: a walk over millions of names within one TTL must not
// grow the caches without limit. Past the bound, arbitrary entries go
// (map order), which only costs a later request.
const (
	maxCachedAttrs      = 1 << 20 // ~200 MB at worst
	maxCachedDirEntries = 1 << 20 // entries summed over cached listings
)

// sweepLocked drops expired entries from both caches, then arbitrary ones
// while a cache is over its bound. Requires v.mu.
func (v *Volume) sweepLocked(now time.Time) {
	for k, ce := range v.attrs {
		if !now.Before(ce.expires) || len(v.attrs) > maxCachedAttrs*3/4 {
			delete(v.attrs, k)
		}
	}
	total := 0
	for k, dc := range v.dirs {
		if !now.Before(dc.expires) {
			delete(v.dirs, k)
			continue
		}
		total += len(dc.entries)
	}
	for k, dc := range v.dirs {
		if total <= maxCachedDirEntries*3/4 {
			break
		}
		total -= len(dc.entries)
		delete(v.dirs, k)
	}
	v.sweepAt = min(max(1024, 2*len(v.attrs)), maxCachedAttrs)
}

// changedLocked records that name changed through this volume: its parent's
// listing is dropped and its cached entry replaced by e (nil: forgotten).
// Requires v.mu.
func (v *Volume) changedLocked(name string, e *Entry) {
	v.gen++
	delete(v.dirs, parentOf(name))
	if e == nil {
		delete(v.attrs, name)
		return
	}
	v.putLocked(name, *e, false, time.Now())
}

func (v *Volume) changed(name string, e *Entry) {
	v.mu.Lock()
	v.changedLocked(name, e)
	v.mu.Unlock()
}

// forgetTree drops every cached fact at or under dir (dir rename).
func (v *Volume) forgetTreeLocked(dir string) {
	v.gen++
	delete(v.dirs, parentOf(dir))
	delete(v.attrs, dir)
	delete(v.dirs, dir)
	for k := range v.attrs {
		if underDir(k, dir) {
			delete(v.attrs, k)
		}
	}
	for k := range v.dirs {
		if underDir(k, dir) {
			delete(v.dirs, k)
		}
	}
}

// Lookup returns what name is: an open file's local view, a cached entry
// younger than AttrTTL (NegativeTTL for misses), or a fresh answer from
// the store (Stat, then a one-entry List to find implicit directories).
// A miss wraps blob.ErrNotFound. A name that is both a blob and a prefix
// of other blobs is a file: the blob shadows the directory (as in
// BlobFuse2, where GetAttr finds the blob first).
func (v *Volume) Lookup(ctx context.Context, name string) (Entry, error) {
	if name == "" {
		return v.rootEntry(), nil
	}
	now := time.Now()
	v.mu.Lock()
	if st := v.open[name]; st != nil {
		e := st.entry
		v.mu.Unlock()
		return e, nil
	}
	if ce, ok := v.attrs[name]; ok && now.Before(ce.expires) {
		v.mu.Unlock()
		if ce.negative {
			return Entry{}, notFound("lookup", name)
		}
		return ce.entry, nil
	}
	if e, found, ok := v.fromListingLocked(name, now); ok {
		v.mu.Unlock()
		if !found {
			return Entry{}, notFound("lookup", name)
		}
		return e, nil
	}
	gen := v.gen
	dir, start, wait := v.noteMissLocked(name, now)
	v.mu.Unlock()
	if start != nil {
		go v.warmDir(dir, start)
	}
	if wait != nil {
		if e, found, ok := v.awaitWarm(ctx, name, wait); ok {
			if !found {
				return Entry{}, notFound("lookup", name)
			}
			return e, nil
		}
	}

	e, err := v.fetch(ctx, name)
	negative := errors.Is(err, blob.ErrNotFound)
	if err != nil && !negative {
		return Entry{}, err
	}
	v.mu.Lock()
	if v.gen == gen {
		v.putLocked(name, e, negative, now)
	}
	v.mu.Unlock()
	return e, err
}

// fetch asks the store what name is, bypassing the caches.
func (v *Volume) fetch(ctx context.Context, name string) (Entry, error) {
	a, err := v.store.Stat(ctx, name)
	if err == nil {
		return entryOf(name, a), nil
	}
	if !errors.Is(err, blob.ErrNotFound) {
		return Entry{}, err
	}
	page, err := v.store.List(ctx, blob.ListOptions{Prefix: name + "/", MaxResults: 1})
	if err != nil {
		return Entry{}, err
	}
	if len(page.Blobs) > 0 || len(page.Prefixes) > 0 {
		return Entry{Name: name, Dir: true, ModTime: v.mounted}, nil
	}
	return Entry{}, notFound("lookup", name)
}

// forget drops name's cached entry without bumping the generation (used
// when the cache turned out to be wrong, not because we changed anything).
func (v *Volume) forget(name string) {
	v.mu.Lock()
	delete(v.attrs, name)
	delete(v.dirs, parentOf(name)) // it answers lookups too (dirwarm.go)
	v.mu.Unlock()
}

// ReadDir lists directory dir, sorted by name, reusing a listing younger
// than DirListTTL. Every page of the store's listing is read; each entry
// also enters the attribute cache, so the lookups that follow a readdir
// (ls -l, READDIRPLUS) cost no request. Open files show their local size.
func (v *Volume) ReadDir(ctx context.Context, dir string) ([]DirEntry, error) {
	now := time.Now()
	v.mu.Lock()
	if dc := v.dirs[dir]; dc != nil && now.Before(dc.expires) {
		ents := v.overlayLocked(dir, dc.entries)
		v.mu.Unlock()
		return ents, nil
	}
	gen := v.gen
	v.mu.Unlock()

	ents, err := v.list(ctx, dir, 0)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cacheListingLocked(dir, ents, gen, now)
	return v.overlayLocked(dir, ents), nil
}

// cacheListingLocked remembers dir's listing (taken under generation gen
// at now) and its entries' attributes, unless something changed since.
// Requires v.mu.
func (v *Volume) cacheListingLocked(dir string, ents []DirEntry, gen uint64, now time.Time) {
	if v.gen == gen {
		if v.opts.DirListTTL > 0 && len(ents) <= maxCachedDirEntries/2 {
			v.dirs[dir] = &dirCache{entries: ents, listed: now, expires: now.Add(v.opts.DirListTTL)}
			v.dirEntries += len(ents)
			if v.dirEntries > maxCachedDirEntries {
				v.sweepLocked(now)
				v.dirEntries = 0
				for _, dc := range v.dirs {
					v.dirEntries += len(dc.entries)
				}
			}
		}
		for _, de := range ents {
			if _, open := v.open[de.Entry.Name]; !open {
				v.putLocked(de.Entry.Name, de.Entry, false, now)
			}
		}
	}
}

// overlayLocked replaces the entries of files open in dir with their local
// view (size while dirty). ents is shared and never modified: a copy is
// made when something changes. Requires v.mu.
func (v *Volume) overlayLocked(dir string, ents []DirEntry) []DirEntry {
	var out []DirEntry
	for name, st := range v.open {
		if parentOf(name) != dir {
			continue
		}
		comp := name[len(dirPrefix(dir)):]
		i, found := findEntry(ents, comp)
		if found && ents[i].Entry == st.entry {
			continue
		}
		if out == nil {
			out = slices.Clone(ents)
			ents = out
		}
		if found {
			out[i].Entry = st.entry
		} else {
			out = slices.Insert(out, i, DirEntry{Name: comp, Entry: st.entry})
			ents = out
		}
	}
	if out == nil {
		return ents
	}
	return out
}

// list reads every page of dir's listing (at most maxPages when
// positive, else errDirTooBig) and merges blobs and prefixes into one
// sorted, duplicate-free slice.
func (v *Volume) list(ctx context.Context, dir string, maxPages int) ([]DirEntry, error) {
	prefix := dirPrefix(dir)
	var ents []DirEntry
	marker := ""
	for pages := 1; ; pages++ {
		if maxPages > 0 && pages > maxPages {
			return nil, fmt.Errorf("list %q: %w", prefix, errDirTooBig)
		}
		page, err := v.store.List(ctx, blob.ListOptions{Prefix: prefix, Delimiter: "/", Marker: marker, Metadata: true})
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, err)
		}
		for _, b := range page.Blobs {
			comp := b.Name[len(prefix):]
			if comp == "" {
				continue // "dir/" placeholder blob: the directory itself
			}
			if !showable(comp) {
				v.hidden(b.Name)
				continue
			}
			ents = append(ents, DirEntry{Name: comp, Entry: entryOf(b.Name, b)})
		}
		for _, p := range page.Prefixes {
			comp := strings.TrimSuffix(p[len(prefix):], "/")
			if !showable(comp) {
				v.hidden(p)
				continue
			}
			ents = append(ents, DirEntry{Name: comp, Entry: Entry{Name: prefix + comp, Dir: true, ModTime: v.mounted}})
		}
		if page.NextMarker == "" {
			break
		}
		marker = page.NextMarker
	}
	// Sort by name; among equal names a blob (file or marker) sorts
	// before the bare prefix, and the dedup below keeps the first: a
	// file shadows a same-named prefix, a marker absorbs it.
	slices.SortFunc(ents, func(a, b DirEntry) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return cmp.Compare(implicitRank(a), implicitRank(b))
	})
	ents = slices.CompactFunc(ents, func(a, b DirEntry) bool { return a.Name == b.Name })
	return ents, nil
}

func implicitRank(de DirEntry) int {
	if de.Dir && !de.Marker {
		return 1
	}
	return 0
}

// hidden logs, once per name, a blob that no path can reach.
func (v *Volume) hidden(name string) {
	if v.errs.first("hidden:" + name) {
		v.log.Warn("blobfs: blob name cannot be shown as a path; skipped", "name", name)
	}
}

// Mkdir creates directory name as a marker blob (zero length, metadata
// hdi_isfolder=true, as BlobFuse2 writes it), failing with EEXIST if any
// blob has that name.
func (v *Volume) Mkdir(ctx context.Context, name string) (Entry, error) {
	if v.opts.ReadOnly {
		return Entry{}, errROFS("mkdir", name)
	}
	a, err := v.store.Put(ctx, name, nil, blob.WriteOptions{
		Conditions: blob.Conditions{IfNoneMatchAny: true},
		Metadata:   map[string]string{blob.MetaIsFolder: "true"},
	})
	if err != nil {
		return Entry{}, fmt.Errorf("mkdir %q: %w", name, err)
	}
	e := entryOf(name, a)
	e.Dir, e.Marker = true, true // the store may not echo metadata back
	v.changed(name, &e)
	return e, nil
}

// Symlink creates name as a symbolic link to target, stored the way
// BlobFuse2 stores one (so links made by either are read by both).
func (v *Volume) Symlink(ctx context.Context, name, target string) (Entry, error) {
	if v.opts.ReadOnly {
		return Entry{}, errROFS("symlink", name)
	}
	if len(target) == 0 || len(target) > maxSymlink {
		return Entry{}, fmt.Errorf("symlink %q: target of %d bytes: %w", name, len(target), syscall.ENAMETOOLONG)
	}
	a, err := v.store.Put(ctx, name, []byte(target), blob.WriteOptions{
		Conditions: blob.Conditions{IfNoneMatchAny: true},
		Metadata:   map[string]string{metaIsSymlink: "true"},
	})
	if err != nil {
		return Entry{}, fmt.Errorf("symlink %q: %w", name, err)
	}
	e := entryOf(name, a)
	e.Symlink = true // the store may not echo metadata back
	v.changed(name, &e)
	return e, nil
}

// Readlink returns the target of symbolic link name (EINVAL if it is not
// one, as readlink(2) says).
func (v *Volume) Readlink(ctx context.Context, name string) (string, error) {
	e, err := v.Lookup(ctx, name)
	if err != nil {
		return "", err
	}
	if !e.Symlink || e.Size > maxSymlink {
		return "", fmt.Errorf("readlink %q: %w", name, syscall.EINVAL)
	}
	buf := make([]byte, e.Size)
	n, err := v.readBlob(ctx, name, e.ETag, e.Size, buf, 0)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		if errors.Is(err, blob.ErrStale) {
			v.forget(name)
		}
		return "", fmt.Errorf("readlink %q: %w", name, err)
	}
	return string(buf), nil
}

// Rmdir removes directory name: ENOTEMPTY if any blob lies under it,
// ENOTDIR if name is a file. It deletes the marker and any "name/"
// placeholder. A directory that was only implicit and is already empty
// has nothing left to delete: that succeeds, so `rm -r` works after the
// last file of an implicit directory made it vanish.
func (v *Volume) Rmdir(ctx context.Context, name string) error {
	if v.opts.ReadOnly {
		return errROFS("rmdir", name)
	}
	if name == "" {
		return fmt.Errorf("rmdir of the root: %w", syscall.EBUSY)
	}
	placeholder := false
	page, err := v.store.List(ctx, blob.ListOptions{Prefix: name + "/", MaxResults: 2})
	if err != nil {
		return fmt.Errorf("rmdir %q: %w", name, err)
	}
	for _, b := range page.Blobs {
		if b.Name != name+"/" {
			return fmt.Errorf("rmdir %q: %w", name, syscall.ENOTEMPTY)
		}
		placeholder = true
	}
	a, err := v.store.Stat(ctx, name)
	switch {
	case err == nil && !a.IsDirMarker():
		return fmt.Errorf("rmdir %q: %w", name, syscall.ENOTDIR)
	case err == nil:
		if err := v.store.Delete(ctx, name, blob.Conditions{IfMatch: a.ETag}); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("rmdir %q: %w", name, err)
		}
	case !errors.Is(err, blob.ErrNotFound):
		return fmt.Errorf("rmdir %q: %w", name, err)
	}
	if placeholder {
		if err := v.store.Delete(ctx, name+"/", blob.Conditions{}); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("rmdir %q: %w", name, err)
		}
	}
	v.mu.Lock()
	v.forgetTreeLocked(name)
	v.mu.Unlock()
	return nil
}

// Unlink removes file name. A directory gives EISDIR (Linux's answer), a
// missing name ENOENT. If the file is open here, its handles keep working
// on their local content but nothing is uploaded for them any more.
func (v *Volume) Unlink(ctx context.Context, name string) error {
	if v.opts.ReadOnly {
		return errROFS("unlink", name)
	}
	// Holding the open state's lock keeps an upload of this file from
	// landing after the delete and resurrecting it.
	locked := v.lockNamed(name)
	defer v.unlockAll(locked)
	st := locked[0]
	for attempt := 0; ; attempt++ {
		a, err := v.store.Stat(ctx, name)
		if errors.Is(err, blob.ErrNotFound) {
			if st != nil {
				break // gone remotely, but open here: unlinking it is fine
			}
			if e, lerr := v.fetch(ctx, name); lerr == nil && e.Dir {
				return fmt.Errorf("unlink %q: %w", name, syscall.EISDIR)
			}
			v.changed(name, nil)
			return fmt.Errorf("unlink %q: %w", name, err)
		}
		if err != nil {
			return fmt.Errorf("unlink %q: %w", name, err)
		}
		if a.IsDirMarker() {
			return fmt.Errorf("unlink %q: %w", name, syscall.EISDIR)
		}
		if st != nil && attempt == 0 {
			// POSIX: a file open here stays readable after unlink. Keep
			// its committed content locally before the blob goes (read
			// through the Reader, so usually from the node cache).
			// lockNamed holds st.mu, as ensureSession requires.
			err := v.ensureSession(ctx, st, -1)
			if err == nil {
				err = st.sess.materialize(ctx)
			}
			if err != nil {
				v.log.Warn("unlink of an open file: its open handles cannot keep reading", "blob", name, "err", err)
			}
		}
		err = v.store.Delete(ctx, name, blob.Conditions{IfMatch: a.ETag})
		if errors.Is(err, blob.ErrStale) && attempt == 0 {
			continue // replaced between Stat and Delete: look again
		}
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("unlink %q: %w", name, err)
		}
		break
	}
	v.mu.Lock()
	if st != nil {
		v.detachLocked(st)
	}
	v.changedLocked(name, nil)
	v.mu.Unlock()
	return nil
}

// Rename moves src to dst.
//
// Files: a server-side Copy pinned to the source's ETag, then a Delete of
// the source pinned to the same ETag. Copy replaces dst atomically, so
// readers of dst see the old or the new file (write x.tmp, rename to x).
// If src is open with unsaved data, that data is uploaded under dst
// instead. noReplace (RENAME_NOREPLACE) makes the write conditional on dst
// not existing (EEXIST).
//
// Directories: every blob under src is copied, then deleted; not atomic (a
// crash can leave both trees), O(n) requests, as in BlobFuse2. dst must be
// missing or an empty directory.
func (v *Volume) Rename(ctx context.Context, src, dst string, noReplace bool) error {
	if v.opts.ReadOnly {
		return errROFS("rename", src)
	}
	if src == "" || dst == "" {
		return fmt.Errorf("rename %q to %q: %w", src, dst, syscall.EBUSY)
	}
	if src == dst {
		return nil
	}
	se, err := v.Lookup(ctx, src)
	if err != nil {
		return fmt.Errorf("rename %q: %w", src, err)
	}
	de, err := v.Lookup(ctx, dst)
	dstExists := err == nil
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("rename to %q: %w", dst, err)
	}
	if dstExists && noReplace {
		return fmt.Errorf("rename to %q: %w", dst, blob.ErrExists)
	}
	if !se.Dir {
		if dstExists && de.Dir {
			return fmt.Errorf("rename %q over directory %q: %w", src, dst, syscall.EISDIR)
		}
		return v.renameFile(ctx, src, dst, se, noReplace)
	}
	if underDir(dst, src) {
		return fmt.Errorf("rename %q into itself: %w", src, syscall.EINVAL)
	}
	if dstExists {
		if !de.Dir {
			return fmt.Errorf("rename directory %q over file %q: %w", src, dst, syscall.ENOTDIR)
		}
		if err := v.Rmdir(ctx, dst); err != nil {
			return fmt.Errorf("rename %q over %q: %w", src, dst, err)
		}
	}
	return v.renameDir(ctx, src, dst, se)
}

func (v *Volume) renameFile(ctx context.Context, src, dst string, se Entry, noReplace bool) error {
	locked := v.lockNamed(src, dst)
	defer v.unlockAll(locked)
	sst, dstSt := locked[0], locked[1]
	cond := blob.Conditions{IfNoneMatchAny: noReplace}

	var moved blob.Attrs
	var err error
	switch {
	case sst != nil && sst.dirty:
		// Not committed yet (or changed since): commit it under the new
		// name directly; src's bytes are never uploaded again.
		if sst.writeErr != nil {
			return fmt.Errorf("rename %q to %q: not committed, a write failed: %w", src, dst, sst.writeErr)
		}
		moved, err = v.commit(ctx, dst, sst, cond)
		if err != nil {
			return fmt.Errorf("rename %q to %q: %w", src, dst, err)
		}
		if err := v.store.Delete(ctx, src, blob.Conditions{}); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("rename %q to %q: delete source: %w", src, dst, err)
		}
	default:
		var fromLocal bool
		moved, fromLocal, err = v.renameFromLocal(ctx, src, dst, sst, se, cond)
		if err != nil {
			return err
		}
		if !fromLocal {
			if moved, err = v.renameByCopy(ctx, src, dst, sst, se, cond); err != nil {
				return err
			}
		}
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if dstSt != nil {
		v.detachLocked(dstSt)
	}
	e := entryOf(dst, moved)
	if sst != nil {
		delete(v.open, src)
		sst.name = dst
		sst.dirty = false
		sst.pin = moved.ETag
		sst.entry = e
		if sst.sess != nil {
			// Same content, now under dst: later commits are conditional
			// on this version.
			sst.sess.base.name, sst.sess.base.etag = dst, moved.ETag
		}
		v.open[dst] = sst
	}
	v.dropRecentLocked(src)
	v.dropRecentLocked(dst)
	v.changedLocked(src, nil)
	v.changedLocked(dst, &e)
	return nil
}

// renameFromLocal moves a file whose whole content is local here (open
// and committed, or closed a moment ago: see recentFile) by committing
// that content under dst, then deleting src pinned to the version the
// content is. It reports false, and moves nothing, when there is no such
// content or src has changed.
func (v *Volume) renameFromLocal(ctx context.Context, src, dst string, sst *fileState, se Entry, cond blob.Conditions) (blob.Attrs, bool, error) {
	var sess *writeSession
	var etag blob.ETag
	if sst != nil {
		if sst.sess == nil || sst.sess.size > recentMaxFile || !sst.sess.complete() {
			return blob.Attrs{}, false, nil
		}
		sess, etag = sst.sess, sst.pin
	} else {
		r := v.takeRecent(src, se.ETag)
		if r == nil {
			return blob.Attrs{}, false, nil
		}
		defer r.sess.close()
		sess, etag = r.sess, r.etag
		// Our cached entry may predate another mount's write: the
		// content must still be src's before it becomes dst.
		if cur, err := v.store.Stat(ctx, src); err != nil || cur.ETag != etag {
			return blob.Attrs{}, false, nil
		}
	}
	ctx, cancel := v.uploadContext(ctx)
	defer cancel()
	a, err := sess.commit(ctx, dst, cond)
	if err != nil {
		return blob.Attrs{}, false, fmt.Errorf("rename %q to %q: %w", src, dst, err)
	}
	v.stats.renamesFromLocal.Add(1)
	if err := v.store.Delete(ctx, src, blob.Conditions{IfMatch: etag}); err != nil && !errors.Is(err, blob.ErrNotFound) {
		v.changed(dst, nil)
		return blob.Attrs{}, false, fmt.Errorf("rename %q to %q: written, but delete source: %w", src, dst, err)
	}
	return a, true, nil
}

// renameByCopy moves a committed file with a server-side copy pinned to
// the version we know, then a delete pinned to the same version.
func (v *Volume) renameByCopy(ctx context.Context, src, dst string, sst *fileState, se Entry, cond blob.Conditions) (blob.Attrs, error) {
	etag := se.ETag
	if sst != nil {
		etag = sst.pin
	}
	a, err := v.store.Copy(ctx, src, etag, dst, blob.WriteOptions{Conditions: cond})
	if errors.Is(err, blob.ErrStale) && sst == nil {
		// Our cached ETag was old and nobody here has the file open:
		// move whatever src is now.
		var sa blob.Attrs
		if sa, err = v.store.Stat(ctx, src); err == nil {
			etag = sa.ETag
			a, err = v.store.Copy(ctx, src, etag, dst, blob.WriteOptions{Conditions: cond})
		}
	}
	if err != nil {
		v.forget(src)
		return blob.Attrs{}, fmt.Errorf("rename %q to %q: %w", src, dst, err)
	}
	// Pinned to the version we copied: a newer src written by someone
	// else in between must not be lost.
	if err := v.store.Delete(ctx, src, blob.Conditions{IfMatch: etag}); err != nil && !errors.Is(err, blob.ErrNotFound) {
		v.changed(dst, nil)
		return blob.Attrs{}, fmt.Errorf("rename %q to %q: copied, but delete source: %w", src, dst, err)
	}
	return a, nil
}

func (v *Volume) renameDir(ctx context.Context, src, dst string, se Entry) error {
	var blobs []blob.Attrs
	for marker := ""; ; {
		page, err := v.store.List(ctx, blob.ListOptions{Prefix: src + "/", Marker: marker})
		if err != nil {
			return fmt.Errorf("rename %q: list: %w", src, err)
		}
		blobs = append(blobs, page.Blobs...)
		if page.NextMarker == "" {
			break
		}
		marker = page.NextMarker
	}
	if se.Marker {
		blobs = append(blobs, blob.Attrs{Name: src, ETag: se.ETag})
	}
	if limit := v.opts.MaxRenameDirEntries; limit > 0 && len(blobs) > limit {
		v.log.Warn("blobfs: directory rename refused: too many entries (raise --max-rename-dir-entries, or let mv copy)",
			"src", src, "dst", dst, "entries", len(blobs), "limit", limit)
		return fmt.Errorf("rename directory %q: %d entries, more than the limit of %d: %w", src, len(blobs), limit, syscall.EXDEV)
	}

	// Open files below src follow the rename; their locks keep their
	// uploads out of the way while blobs move.
	states := v.pinTree(src)
	defer v.unlockAll(states)
	for _, st := range states {
		// Their committed content is about to be deleted under them.
		if st.sess != nil && !st.detached {
			if err := st.sess.materialize(ctx); err != nil {
				return fmt.Errorf("rename %q: keep open file %q: %w", src, st.name, err)
			}
		}
	}

	target := func(name string) string { return dst + name[len(src):] }
	copied := make([]blob.Attrs, len(blobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(v.opts.Concurrency)
	for i, b := range blobs {
		g.Go(func() error {
			a, err := v.store.Copy(gctx, b.Name, b.ETag, target(b.Name), blob.WriteOptions{})
			copied[i] = a
			return err
		})
	}
	if err := g.Wait(); err != nil {
		v.mu.Lock()
		v.forgetTreeLocked(dst)
		v.mu.Unlock()
		return fmt.Errorf("rename %q to %q: copy: %w", src, dst, err)
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(v.opts.Concurrency)
	for _, b := range blobs {
		g.Go(func() error {
			if err := v.store.Delete(gctx, b.Name, blob.Conditions{IfMatch: b.ETag}); err != nil && !errors.Is(err, blob.ErrNotFound) {
				return err
			}
			return nil
		})
	}
	err := g.Wait()

	byName := make(map[string]blob.Attrs, len(copied))
	for _, a := range copied {
		byName[a.Name] = a
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, st := range states {
		if st.detached || v.open[st.name] != st || !underDir(st.name, src) {
			continue // moved or closed since it was pinned
		}
		delete(v.open, st.name)
		st.name = target(st.name)
		st.entry.Name = st.name
		if a, ok := byName[st.name]; ok {
			if !st.dirty {
				st.pin = a.ETag
				st.entry = entryOf(st.name, a)
			}
			if st.sess != nil {
				st.sess.base.name, st.sess.base.etag = st.name, a.ETag
			}
		}
		v.open[st.name] = st
	}
	v.forgetTreeLocked(src)
	v.forgetTreeLocked(dst)
	if err != nil {
		return fmt.Errorf("rename %q to %q: copied, but delete sources: %w", src, dst, err)
	}
	return nil
}

// Statfs reports the filesystem holding StatfsDir (the cache disk), so that
// free-space checks (HF datasets, shutil.disk_usage) see real numbers
// instead of zeros that make them refuse to write.
func (v *Volume) Statfs() (syscall.Statfs_t, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(v.opts.StatfsDir, &st); err != nil {
		return st, fmt.Errorf("statfs %s: %w", v.opts.StatfsDir, err)
	}
	return st, nil
}
