package cache

import "sync"

// fresh holds the blocks fetched most recently, first in first out, up to
// a byte cap: the bytes readahead brought in ahead of a sequential reader.
//
// The RAM tier cannot be trusted with them: ristretto admits a new key
// only if it wins against a sampled victim's access frequency, so during a
// scan (exactly when readahead runs) most freshly fetched blocks are
// turned away, and the reader, arriving a moment later, found them only on
// disk — a 1 MiB pread and a checksum per block the network had just
// delivered (measured on a cold 512 MiB scan: 14% of the daemon's CPU).
// fresh keeps them regardless of frequency, briefly, and the RAM tier's
// budget is reduced by its cap, so RAM use stays within MemBudgetBytes.
//
// The slices are the fetch's own (shared with the RAM tier when it took
// them): fresh costs no copy, only the memory it keeps alive.
type fresh struct {
	mu    sync.Mutex
	cap   int64
	bytes int64               // GUARDED_BY(mu)
	m     map[blockKey][]byte // GUARDED_BY(mu)
	fifo  []blockKey          // GUARDED_BY(mu): insertion order; may hold removed keys
}

func newFresh(capBytes int64) *fresh {
	return &fresh{cap: capBytes, m: map[blockKey][]byte{}}
}

// put remembers k's bytes, dropping the oldest beyond the cap.
func (f *fresh) put(k blockKey, data []byte) {
	if f == nil || int64(len(data)) > f.cap {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.m[k]; ok {
		f.bytes -= int64(len(old))
	}
	f.m[k] = data
	f.fifo = append(f.fifo, k)
	f.bytes += int64(len(data))
	for f.bytes > f.cap && len(f.fifo) > 0 {
		old := f.fifo[0]
		f.fifo = f.fifo[1:]
		if d, ok := f.m[old]; ok {
			f.bytes -= int64(len(d))
			delete(f.m, old)
		}
	}
	if len(f.fifo) > 2*len(f.m)+64 {
		// Compact the keys forget left behind.
		live := make([]blockKey, 0, len(f.m))
		for _, k := range f.fifo {
			if _, ok := f.m[k]; ok {
				live = append(live, k)
			}
		}
		f.fifo = live
	}
}

// get returns k's bytes if they are still held.
func (f *fresh) get(k blockKey) ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.m[k]
	return d, ok
}

// forget drops the blocks of fk (Forget, ForgetStale).
func (f *fresh) forget(fk fileKey) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, d := range f.m {
		if k.fk == fk {
			f.bytes -= int64(len(d))
			delete(f.m, k)
		}
	}
}

// used is the bytes fresh holds.
func (f *fresh) used() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bytes
}
