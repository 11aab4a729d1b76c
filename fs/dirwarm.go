package fs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Directory warm-up. A data loader opens thousands of files of one
// directory without listing it first (the file names come from an index),
// and each lookup the attribute cache misses costs a HEAD: 1,000 files
// were 1,012 HEADs, and 0.79× rclone's files per second. After the second
// lookup miss in a directory the volume lists that directory once in the
// background, as ReadDir would; lookups from then on are answered from
// the listing, a missing name included, for DirListTTL. A directory
// longer than warmMaxPages listing pages is not warmed (its lookups keep
// their HEADs) and not tried again for a while.
//
// Lookups that miss while the listing runs wait for it (up to warmWait)
// instead of sending their own HEADs: a data loader's workers open their
// first files all at once, and those HEADs queued behind each other's
// data at the backend (a cold GPU-feed epoch with 16 workers sent 100 to
// 260 HEADs for 160 files, and its first shard took 4× the raw SDK's).

const (
	// warmAfterMisses lookup misses in one directory start its listing.
	warmAfterMisses = 2
	// warmMaxPages bounds a warm-up listing: 4 pages of up to 5,000
	// entries each.
	warmMaxPages = 4
	// maxWarmTracked bounds the directories whose misses are counted.
	maxWarmTracked = 4096
	// warmTimeout bounds one warm-up listing.
	warmTimeout = 30 * time.Second
	// warmWait bounds how long a lookup waits for a running warm-up
	// listing before it asks the store itself: a few listing pages on
	// Blob, and far less than a HEAD behind a queue of reads.
	warmWait = time.Second
)

// errDirTooBig: a bounded listing ended before the directory did.
var errDirTooBig = errors.New("directory too long to warm up")

// dirWarm is a directory's warm-up state.
type dirWarm struct {
	misses    int
	listing   bool
	done      chan struct{} // closed when the running listing ends
	notBefore time.Time     // after a failed or abandoned listing
}

// fromListingLocked answers a lookup of name from a listing of its
// parent: a name in it for AttrTTL, a name missing from it for
// NegativeTTL (a file created elsewhere shows up as soon as without a
// listing). ok is false when the listing cannot answer. Requires v.mu.
func (v *Volume) fromListingLocked(name string, now time.Time) (e Entry, found, ok bool) {
	parent := parentOf(name)
	dc := v.dirs[parent]
	if dc == nil || !now.Before(dc.expires) {
		return Entry{}, false, false
	}
	comp := name[len(dirPrefix(parent)):]
	i, found := findEntry(dc.entries, comp)
	age := now.Sub(dc.listed)
	switch {
	case found && age < v.opts.AttrTTL:
		return dc.entries[i].Entry, true, true
	case !found && age < v.opts.NegativeTTL:
		return Entry{}, false, true
	}
	return Entry{}, false, false
}

// findEntry finds comp in a listing sorted by name.
func findEntry(ents []DirEntry, comp string) (int, bool) {
	return slices.BinarySearchFunc(ents, comp, func(de DirEntry, c string) int { return strings.Compare(de.Name, c) })
}

// noteMissLocked counts a lookup miss in name's directory. It returns
// start, a channel, when the caller is to run the warm-up listing
// (warmDir) that closes it; and wait, when a listing of the directory is
// running (the caller's own included) and the lookup should wait for it.
// Requires v.mu.
func (v *Volume) noteMissLocked(name string, now time.Time) (dir string, start chan struct{}, wait <-chan struct{}) {
	if v.opts.DirListTTL <= 0 || v.closed {
		return "", nil, nil
	}
	dir = parentOf(name)
	w := v.warm[dir]
	if w == nil {
		if len(v.warm) >= maxWarmTracked {
			clear(v.warm)
		}
		w = &dirWarm{}
		v.warm[dir] = w
	}
	if w.listing {
		return dir, nil, w.done
	}
	if now.Before(w.notBefore) {
		return dir, nil, nil
	}
	w.misses++
	if w.misses < warmAfterMisses {
		return dir, nil, nil
	}
	w.listing = true
	w.done = make(chan struct{})
	return dir, w.done, w.done
}

// awaitWarm waits for a running warm-up listing (bounded by warmWait and
// ctx) and answers the lookup of name from it; ok is false when it cannot
// (the listing failed, was too long, or is still running).
func (v *Volume) awaitWarm(ctx context.Context, name string, wait <-chan struct{}) (e Entry, found, ok bool) {
	t := time.NewTimer(warmWait)
	defer t.Stop()
	select {
	case <-wait:
	case <-t.C:
		return Entry{}, false, false
	case <-ctx.Done():
		return Entry{}, false, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fromListingLocked(name, time.Now())
}

// warmDir lists dir (at most warmMaxPages pages) and caches the listing as
// ReadDir does.
func (v *Volume) warmDir(dir string, done chan struct{}) {
	// Closed after v.mu is released below (defers run last in, first out),
	// so a waiter that wakes finds the listing cached.
	defer close(done)
	ctx, cancel := context.WithTimeout(v.bg, warmTimeout)
	defer cancel()
	v.mu.Lock()
	gen := v.gen
	v.mu.Unlock()
	now := time.Now()
	ents, err := v.list(ctx, dir, v.warmMaxPages)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		if w := v.warm[dir]; w != nil {
			*w = dirWarm{notBefore: now.Add(v.opts.DirListTTL)}
		}
		if !errors.Is(err, errDirTooBig) && !errors.Is(err, context.Canceled) {
			v.log.Debug("blobfs: directory warm-up failed", "dir", dir, "err", err)
		}
		return
	}
	delete(v.warm, dir)
	v.stats.dirWarmups.Add(1)
	v.cacheListingLocked(dir, ents, gen, now)
}
