package cache

import (
	"sync"
	"sync/atomic"
)

// prefetchLedger measures prefetch's usefulness: it remembers the blocks
// a Fill with FillOptions.Prefetch fetched itself and nobody has read
// since, and counts the ones evicted unread as waste.
type prefetchLedger struct {
	mu sync.Mutex
	// unread maps a prefetched block nobody has read yet to its length.
	// Bounded by maxUnread: past it the oldest half is forgotten (and can
	// no longer be counted as waste). GUARDED_BY(mu)
	unread map[blockKey]int64
	n      atomic.Int64 // len(unread), read without mu on the hot path

	prefetched atomic.Uint64 // bytes fetched by prefetch
	wasted     atomic.Uint64 // of those, bytes evicted before any read
}

const maxUnread = 1 << 20

// fetched records a block prefetch fetched.
func (l *prefetchLedger) fetched(k blockKey, n int64) {
	l.prefetched.Add(uint64(n))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unread == nil {
		l.unread = map[blockKey]int64{}
	}
	if len(l.unread) >= maxUnread {
		drop := len(l.unread) / 2
		for k := range l.unread {
			delete(l.unread, k)
			if drop--; drop == 0 {
				break
			}
		}
	}
	l.unread[k] = n
	l.n.Store(int64(len(l.unread)))
}

// read records that a block was served to a reader.
func (l *prefetchLedger) read(k blockKey) {
	if l.n.Load() == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.unread, k)
	l.n.Store(int64(len(l.unread)))
}

// evicted records that eviction dropped a block.
func (l *prefetchLedger) evicted(k blockKey) {
	if l.n.Load() == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, ok := l.unread[k]; ok {
		l.wasted.Add(uint64(n))
		delete(l.unread, k)
		l.n.Store(int64(len(l.unread)))
	}
}

// filled is told of each block a Fill fetched itself, once it was
// offered to the tiers: a Prefetch fill's stored blocks enter the ledger.
// (The fetch itself recorded that its identity may read the blob, so a
// reader of that identity is served the block without a Validate.)
func (c *Cache) filled(k blockKey, fl *flight, opts FillOptions) {
	if fl.err != nil {
		return
	}
	if opts.Prefetch && fl.storeErr == nil {
		c.pf.fetched(k, int64(len(fl.data)))
	}
}

// PrefetchStats count what fills with FillOptions.Prefetch fetched, in
// this process.
type PrefetchStats struct {
	// FetchedBytes were fetched from the backend by prefetch.
	FetchedBytes uint64
	// WastedBytes of them were evicted before any reader of this process
	// read them (a bounded ledger: blocks beyond a million unread ones are
	// forgotten and not counted).
	WastedBytes uint64
}

// PrefetchStats returns the prefetch counters.
func (c *Cache) PrefetchStats() PrefetchStats {
	return PrefetchStats{FetchedBytes: c.pf.prefetched.Load(), WastedBytes: c.pf.wasted.Load()}
}
