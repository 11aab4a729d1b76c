package csi

import "sync"

// keyLocks hands out one try-lock per key (a volume id, a volume name, a
// mount target). CSI lets a plugin answer a second call for a volume that
// is still being worked on with ABORTED, and the CO retries with backoff;
// that is simpler and safer than queueing calls that may be stale by the
// time they run, and it is what csi-driver-host-path and blob-csi-driver
// do.
type keyLocks struct {
	mu   sync.Mutex
	busy map[string]struct{} // GUARDED_BY(mu)
}

func newKeyLocks() *keyLocks { return &keyLocks{busy: map[string]struct{}{}} }

// tryLock takes key's lock if it is free and returns its release; ok is
// false while another call holds it.
func (l *keyLocks) tryLock(key string) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, held := l.busy[key]; held {
		return nil, false
	}
	l.busy[key] = struct{}{}
	return func() {
		l.mu.Lock()
		delete(l.busy, key)
		l.mu.Unlock()
	}, true
}
