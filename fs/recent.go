package fs

import (
	"sync/atomic"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// Files this mount wrote and closed are kept locally for a moment, so the
// rename that typically follows (PyTorch DCP writes .metadata.tmp, fsyncs,
// closes and renames it to .metadata; safetensors and Lightning do the
// same) commits the bytes under the new name from local content — no
// server-side copy, whose cost grows with the file on a real account.
const (
	recentTTL     = 30 * time.Second
	recentMaxFile = 64 << 20  // larger files are renamed with a server-side copy
	recentMaxAll  = 256 << 20 // local bytes kept in all for renames
)

type recentFile struct {
	sess    *writeSession
	etag    blob.ETag // the committed version the content is
	expires time.Time
}

// volumeStats counts what tests and metrics want to see of the write path.
type volumeStats struct {
	stagedInBackground atomic.Int64 // blocks uploaded while the application was still writing
	commits            atomic.Int64 // successful commits (Put or block list)
	renamesFromLocal   atomic.Int64 // renames committed from local content instead of a copy
	dirWarmups         atomic.Int64 // directories listed after lookup misses (dirwarm.go)
}

// WriteStats is a snapshot of the volume's write counters.
type WriteStats struct {
	StagedInBackground int64
	Commits            int64
	RenamesFromLocal   int64
}

// WriteStats returns the volume's write counters.
func (v *Volume) WriteStats() WriteStats {
	return WriteStats{
		StagedInBackground: v.stats.stagedInBackground.Load(),
		Commits:            v.stats.commits.Load(),
		RenamesFromLocal:   v.stats.renamesFromLocal.Load(),
	}
}

// keepRecent is called when the last handle of name closes: a clean,
// wholly local, small enough session is kept for a later rename instead
// of being closed. Reports whether it took the session.
func (v *Volume) keepRecent(name string, etag blob.ETag, sess *writeSession, unusable bool) bool {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.dropRecentLocked(name)
	v.expireRecentLocked(now)
	if unusable || v.closed || etag == "" || sess.size > recentMaxFile || !sess.complete() {
		return false
	}
	for v.recentBytes+sess.size > recentMaxAll && v.dropOldestRecentLocked() {
	}
	if v.recentBytes+sess.size > recentMaxAll {
		return false
	}
	v.recent[name] = &recentFile{sess: sess, etag: etag, expires: now.Add(recentTTL)}
	v.recentBytes += sess.size
	return true
}

// takeRecent removes and returns name's kept content if it is still the
// version etag. The caller closes it.
func (v *Volume) takeRecent(name string, etag blob.ETag) *recentFile {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expireRecentLocked(time.Now())
	r := v.recent[name]
	if r == nil {
		return nil
	}
	delete(v.recent, name)
	v.recentBytes -= r.sess.size
	if r.etag != etag {
		r.sess.close()
		return nil
	}
	return r
}

// dropRecentLocked forgets name's kept content. Requires v.mu.
func (v *Volume) dropRecentLocked(name string) {
	if r := v.recent[name]; r != nil {
		delete(v.recent, name)
		v.recentBytes -= r.sess.size
		r.sess.close()
	}
}

func (v *Volume) expireRecentLocked(now time.Time) {
	for name, r := range v.recent {
		if now.After(r.expires) {
			v.dropRecentLocked(name)
		}
	}
}

func (v *Volume) dropOldestRecentLocked() bool {
	var oldest string
	var at time.Time
	for name, r := range v.recent {
		if oldest == "" || r.expires.Before(at) {
			oldest, at = name, r.expires
		}
	}
	if oldest == "" {
		return false
	}
	v.dropRecentLocked(oldest)
	return true
}
