package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/blobfs/blobfs/blob"
)

// Object identifies one version of one blob and who is reading it.
// Account, Container, Name and ETag key the cached bytes; Size bounds
// reads (io.ReaderAt semantics) and must be the size of that version.
type Object struct {
	Account, Container, Name string
	ETag                     blob.ETag
	Size                     int64

	// Credential names the identity the caller reads with (an id such as a
	// client id or a CSI volume's identity, never a secret). Cached bytes
	// are only served to an identity that has shown, in this process, that
	// it may read this blob at this ETag: by a successful fetch of its own,
	// or by Validate.
	Credential string
	// Validate checks with Credential's own rights that the blob may be
	// read and still has ETag (typically a HEAD, see StoreValidate). It is
	// called before the first cache hit for a (blob, ETag, Credential) in
	// this process; nil means a 1-byte fetch through the FetchFunc does the
	// check. A caller that has just done that HEAD itself may pass a func
	// returning nil.
	Validate func(ctx context.Context) error
	// FetchV, if set, reads like the FetchFunc it comes with, but into
	// several buffers with one backend request (see StoreFetchV): a run
	// of missing blocks is then fetched straight into each block's own
	// buffer, where otherwise one buffer is fetched and copied out per
	// block (the RAM tier needs separate allocations to account them).
	FetchV FetchVFunc
}

// FetchVFunc reads consecutive bytes of the object into bufs, in order,
// with the semantics of FetchFunc for the buffers taken as one.
type FetchVFunc func(ctx context.Context, bufs [][]byte, off int64) (int, error)

// FetchFunc reads the object's bytes from the backend with io.ReaderAt
// semantics, pinned to the Object's ETag (blob.ErrStale if it changed),
// with the caller's credential. See StoreFetch.
type FetchFunc func(ctx context.Context, p []byte, off int64) (int, error)

// FillOptions modify Fill.
type FillOptions struct {
	// Pin keeps the range on disk: eviction skips pinned blocks until Unpin
	// or Forget. Pins are stored on disk, shared by every process using the
	// directory, and survive restarts.
	Pin bool
	// Prefetch marks a fill made ahead of any reader (prefetched.go): the
	// bytes it fetches count as prefetched, and as wasted if evicted
	// unread.
	Prefetch bool
	// LeaveJoined leaves the blocks another caller is already fetching to
	// that caller: Fill does not wait for them or report their errors.
	// A warm-up racing the readers (blobfs prefetch --manifest beside a
	// running job) otherwise spent its workers waiting on the files the
	// readers were fetching, and stayed level with them; leaving those
	// it moves on to the files the readers will open next, which are
	// then in flight or cached when they do (OpenBacking waits for such
	// a file and hands it to the kernel). Ignored with Pin, which needs
	// every block stored.
	LeaveJoined bool
}

// ObjectStatus describes how much of an object the disk tier holds.
type ObjectStatus struct {
	Size, BlockSize, Blocks    int64
	CachedBlocks, PinnedBlocks int64
	CachedBytes                int64
}

// Percent is the share of the object's bytes on disk, 0..100.
func (s ObjectStatus) Percent() float64 {
	if s.Size == 0 {
		return 100
	}
	return 100 * float64(s.CachedBytes) / float64(s.Size)
}

// Complete reports whether every byte of the object is on disk.
func (s ObjectStatus) Complete() bool { return s.CachedBlocks == s.Blocks }

// Stats are the cache's counters. Hits and misses count blocks; DiskUsed is
// shared by all processes using the directory, the rest is this Cache's.
type Stats struct {
	BlockSize                   int64
	DiskBudget, DiskUsed        int64
	MemBudget, MemUsed          int64
	RAMHits, DiskHits, Misses   uint64
	Fetches, FetchedBytes       uint64
	DiskReadBytes               uint64
	DiskWriteBytes              uint64
	Evictions, ChecksumFailures uint64
	WriteFailures, Validations  uint64
	// RangeHits and RangeMisses count the RangeUnit-sized units of random
	// reads (ReadRandomAt) served from RAM and fetched.
	RangeHits, RangeMisses uint64
	// Backings counts the objects handed to the kernel whole (OpenBacking);
	// BackingWaits the opens that waited for the rest of the object's
	// fetches first (awaitInFlight).
	Backings, BackingWaits uint64
}

// ErrClosed is returned by every method after Close, and to readers whose
// fetch was cut short by Close.
var ErrClosed = errors.New("cache: closed")

// Cache is a node-level block cache: a RAM tier in front of a disk tier in
// front of the caller's FetchFunc. It is safe for concurrent use.
type Cache struct {
	bs     int64
	unit   int64 // RangeUnit: the unit of random-read fetches (see ranges.go)
	maxRun int64 // blocks per backend request
	window int64 // blocks planned at once by one ReadAt/Fill
	log    *slog.Logger
	met    *metrics
	st     counters
	disk   *disk                            // nil: no disk tier
	ram    *ristretto.Cache[string, []byte] // nil: no RAM tier
	fresh  *fresh                           // nil without a RAM tier (fresh.go)
	ids    identities
	pf     prefetchLedger // prefetched.go
	sem    chan struct{}
	// prefetchSem caps the fetches of prefetch fills (FillOptions.Prefetch)
	// at 3/4 of sem, so a reader's own misses and its readahead always
	// find a slot instead of queueing behind a dataset warm-up.
	prefetchSem chan struct{}

	// life ends at Close; every fetch runs under a context that ends with
	// it and with nothing else.
	life   context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup // running fetches
	closed atomic.Bool

	fmu sync.Mutex
	// flights are the blocks being fetched. A flight leaves the map only
	// after its block was offered to both tiers, so a reader that misses
	// both tiers and then finds no flight knows no fetch just finished —
	// unless flightGen moved, which it checks.
	flights map[blockKey]*flight // GUARDED_BY(fmu)
	// unitFlights are the range units being fetched for random reads,
	// keyed by unit index (ranges.go).
	unitFlights map[blockKey]*flight // GUARDED_BY(fmu)
	flightGen   atomic.Uint64        // bumped under fmu when flights or unitFlights shrink
}

// flight is one block being fetched; all readers of the block share it.
type flight struct {
	done   chan struct{} // closed once data or err is set
	stored chan struct{} // closed once the block was offered to the tiers
	data   []byte
	err    error
	// storeErr is why the disk tier did not take the block; set before
	// stored is closed.
	storeErr error
}

func newFlight() *flight {
	return &flight{done: make(chan struct{}), stored: make(chan struct{})}
}

// fail ends a flight that brought no bytes.
func (fl *flight) fail(err error) {
	fl.err = err
	close(fl.done)
	close(fl.stored)
}

// abortLocked fails flights that will never run (Close has run: it flips
// closed under fmu) and removes them from m. Must hold fmu.
func abortLocked(m map[blockKey]*flight, keys []blockKey, fls []*flight) {
	for i, fl := range fls {
		delete(m, keys[i])
		fl.fail(ErrClosed)
	}
}

// runKeys are the keys of blocks first..first+n-1 of fk.
func runKeys(fk fileKey, first int64, n int) []blockKey {
	keys := make([]blockKey, n)
	for i := range keys {
		keys[i] = blockKey{fk, first + int64(i)}
	}
	return keys
}

// Open opens (creating if needed) a cache. With a Dir, it takes part in the
// directory's shared protocol: it waits for the directory lock, removes
// crash debris and reuses every block on disk.
func Open(ctx context.Context, cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Cache{
		bs:          cfg.BlockSize,
		unit:        cfg.RangeUnit,
		maxRun:      cfg.MaxFetchBytes / cfg.BlockSize,
		log:         cfg.Logger,
		sem:         make(chan struct{}, cfg.MaxInflightFetches),
		prefetchSem: make(chan struct{}, max(1, cfg.MaxInflightFetches*3/4)),
		flights:     map[blockKey]*flight{},
		unitFlights: map[blockKey]*flight{},
	}
	c.window = c.maxRun * int64(cfg.MaxInflightFetches)
	var diskUsed, diskBudget func() float64
	if cfg.Dir != "" {
		diskUsed = func() float64 { return float64(c.disk.usedNow()) }
		diskBudget = func() float64 { return float64(c.disk.budget) }
	}
	met, err := newMetrics(cfg.Registerer, diskUsed, diskBudget)
	if err != nil {
		return nil, err
	}
	c.met = met
	if cfg.MemBudgetBytes > 0 {
		// The just-fetched blocks get what one full set of fetches
		// brings in plus the two runs a reader is between (with exactly
		// one set, the newest fill pushed out the block the reader was
		// about to read, which it then read back from disk: 4.5% of a
		// cold scan's samples), at most three quarters of the budget;
		// the RAM tier the rest.
		freshCap := min(int64(cfg.MaxInflightFetches+2)*cfg.MaxFetchBytes, cfg.MemBudgetBytes*3/4)
		c.fresh = newFresh(freshCap)
		c.ram, err = ristretto.NewCache(&ristretto.Config[string, []byte]{
			// Ten counters per item: blocks, plus room for the smaller
			// range units of random reads.
			NumCounters:        max(1000, 10*cfg.MemBudgetBytes/cfg.BlockSize+10*cfg.MemBudgetBytes/(64<<10)),
			MaxCost:            cfg.MemBudgetBytes - freshCap,
			BufferItems:        64,
			IgnoreInternalCost: true,
		})
		if err != nil {
			return nil, fmt.Errorf("cache: RAM tier: %w", err)
		}
	}
	if cfg.Dir != "" {
		if c.disk, err = openDisk(cfg, met, &c.st); err != nil {
			if c.ram != nil {
				c.ram.Close()
			}
			return nil, err
		}
	}
	if c.disk != nil {
		c.disk.onEvict = c.pf.evicted
	}
	c.life, c.stop = context.WithCancel(context.WithoutCancel(ctx))
	return c, nil
}

// Close cancels running fetches, waits for them and releases the
// directory. Blocks on disk stay for the next Open.
func (c *Cache) Close() error {
	c.fmu.Lock() // no flight starts after this (see startLocked)
	wasClosed := c.closed.Swap(true)
	c.fmu.Unlock()
	if wasClosed {
		return nil
	}
	c.stop()
	c.wg.Wait()
	var err error
	if c.disk != nil {
		err = c.disk.close()
	}
	if c.ram != nil {
		c.ram.Close()
	}
	return err
}

// BlockSize returns the cache's block size.
func (c *Cache) BlockSize() int64 { return c.bs }

func (c *Cache) check(obj Object, fetch FetchFunc) error {
	switch {
	case c.closed.Load():
		return ErrClosed
	case obj.Size < 0:
		return fmt.Errorf("cache: %s has negative size %d: %w", obj.Name, obj.Size, fs.ErrInvalid)
	case fetch == nil:
		return fmt.Errorf("cache: nil FetchFunc: %w", fs.ErrInvalid)
	}
	return nil
}

// readArgs checks a read of n bytes of obj at off: it returns how many
// bytes to read and the error to return with them (io.EOF when the read
// reaches the end), or the error that ends the read at once (io.EOF at or
// past the end).
func (c *Cache) readArgs(obj Object, fetch FetchFunc, n int, off int64) (want int64, eof, err error) {
	if err := c.check(obj, fetch); err != nil {
		return 0, nil, err
	}
	if off < 0 {
		return 0, nil, fmt.Errorf("cache: read %s at offset %d: %w", obj.Name, off, fs.ErrInvalid)
	}
	if off >= obj.Size {
		return 0, nil, io.EOF
	}
	want = int64(n)
	if rem := obj.Size - off; want > rem {
		want, eof = rem, io.EOF
	}
	return want, eof, nil
}

// ReadAt reads len(p) bytes of obj at off with io.ReaderAt semantics bounded
// by obj.Size: n < len(p) only with an error, io.EOF at the end. Blocks come
// from RAM, then disk (verified), then fetch; concurrent misses of one block
// share one fetch, which no reader's cancellation stops — a cancelled
// reader just stops waiting. A block the disk cannot take (full, I/O
// error) is still served; ReadAt never fails because of the cache.
func (c *Cache) ReadAt(ctx context.Context, obj Object, fetch FetchFunc, p []byte, off int64) (int, error) {
	want, eof, err := c.readArgs(obj, fetch, len(p), off)
	if err != nil || want == 0 {
		return 0, err
	}
	fk := keyOf(obj)
	var n int64
	for n < want {
		first := (off + n) / c.bs
		last := min((off+want-1)/c.bs, first+c.window-1)
		m, err := c.readWindow(ctx, obj, fk, fetch, p[n:min(want, (last+1)*c.bs-off)], off+n, first, last)
		n += int64(m)
		if err != nil {
			return int(n), err
		}
	}
	return int(n), eof
}

// part is how one block of a request is served.
type part struct {
	data   []byte  // a hit
	pooled bool    // data goes back to the disk tier's pool after use
	fl     *flight // a miss
	own    bool    // fl was started by this request, with its FetchFunc
	done   bool    // Fill: nothing to do
	onDisk bool    // Fill: done because the disk tier has it
}

// readWindow serves p (at off, covering blocks first..last).
func (c *Cache) readWindow(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, p []byte, off, first, last int64) (int, error) {
	parts := c.plan(ctx, obj, fk, fetch, first, last, false)
	validated := c.ids.has(fk, obj.Credential)
	if !validated {
		// A successful fetch of our own proves access (runFetch records
		// it); wait for those first so a request that starts with a hit
		// does not pay a Validate.
		for _, pt := range parts {
			if pt.own {
				if _, err := c.wait(ctx, obj, pt.fl); err == nil {
					validated = true
					break
				}
			}
		}
	}
	defer func() {
		for _, pt := range parts {
			if pt.pooled {
				c.disk.putBuf(pt.data)
			}
		}
	}()
	var n int
	promoted := false
	for i, pt := range parts {
		b := first + int64(i)
		data := pt.data
		if pt.fl != nil {
			var err error
			if data, err = c.wait(ctx, obj, pt.fl); err != nil {
				return n, err
			}
		}
		if !pt.own && !validated {
			if err := c.validate(ctx, obj, fk, fetch); err != nil {
				return n, err
			}
			validated = true
		}
		s := off + int64(n) - b*c.bs
		e := min(off+int64(len(p))-b*c.bs, int64(len(data)))
		n += copy(p[n:], data[s:e])
		c.pf.read(blockKey{fk, b})
		if c.disk != nil {
			k := blockKey{fk, b}
			if c.disk.pol.access(k, blockCost(int64(len(data))), s, e) {
				c.disk.notePromoted(k)
				promoted = true
			}
		}
	}
	if promoted {
		// Tell the other processes sharing the directory that these
		// blocks are hot, so their scans do not evict them.
		c.disk.flushPromotions()
	}
	return n, nil
}

// plan resolves blocks first..last: hits are read now, misses join a flight
// or start one (runs of up to maxRun consecutive missing blocks share one
// backend request). For Fill, a block already on disk needs nothing and a
// block only in RAM is written to disk without a fetch.
func (c *Cache) plan(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, first, last int64, fill bool) []part {
	parts := make([]part, last-first+1)
	for attempt := 0; ; attempt++ {
		gen := c.flightGen.Load()
		for i := range parts {
			if parts[i].data != nil || parts[i].done {
				continue
			}
			c.lookup(obj, fk, first+int64(i), fill, &parts[i])
		}
		c.fmu.Lock()
		if c.flightGen.Load() != gen && attempt < 2 {
			// A flight finished while we looked: its block may be in a
			// tier now. Look again rather than fetch it twice.
			c.fmu.Unlock()
			continue
		}
		var run []int
		flush := func() {
			if len(run) > 0 {
				c.startLocked(ctx, obj, fk, fetch, first+int64(run[0]), parts, run)
				run = nil
			}
		}
		for i := range parts {
			if parts[i].data != nil || parts[i].done {
				flush()
				continue
			}
			if fl := c.flights[blockKey{fk, first + int64(i)}]; fl != nil {
				flush()
				parts[i].fl = fl
				select {
				case <-fl.done:
					// Fetched already, being stored: as good as a RAM hit.
					c.st.ramHits.Add(1)
					c.met.hit(tierRAM)
				default:
					c.st.misses.Add(1)
					c.met.miss()
				}
				continue
			}
			run = append(run, i)
			if int64(len(run)) == c.maxRun {
				flush()
			}
		}
		flush()
		c.fmu.Unlock()
		return parts
	}
}

// lookup fills pt from the tiers if block b is there.
func (c *Cache) lookup(obj Object, fk fileKey, b int64, fill bool, pt *part) {
	k := blockKey{fk, b}
	if fill && c.disk != nil {
		if c.disk.present(obj, fk, b) {
			pt.done, pt.onDisk = true, true
			return
		}
		if data, ok := c.memGet(k); ok {
			if c.storeDisk(obj, fk, b, [][]byte{data}) == nil {
				pt.done = true
			}
		}
		return
	}
	if data, ok := c.memGet(k); ok {
		if fill {
			pt.done = true
			return
		}
		pt.data = data
		c.st.ramHits.Add(1)
		c.met.hit(tierRAM)
		return
	}
	if c.disk != nil && !fill {
		c.fmu.Lock()
		inFlight := c.flights[k] != nil
		c.fmu.Unlock()
		if inFlight {
			return // being loaded (startPreload) or fetched: plan joins it
		}
		// Without a RAM tier nobody keeps the buffer: recycle it.
		if data, ok := c.disk.read(obj, fk, b, c.ram == nil); ok {
			pt.data, pt.pooled = data, c.ram == nil
			c.st.diskHits.Add(1)
			c.met.hit(tierDisk)
			if c.ram != nil {
				c.ram.Set(k.ramKey(), data, int64(len(data)))
			}
		}
	}
}

// startPreload brings blocks of obj that the disk tier has into memory
// (fresh.go) ahead of a sequential reader, so a warm scan's reads are
// served from memory instead of each waiting for its own disk read. Each
// block is a flight, like a backend fetch: a reader that arrives first
// joins it rather than reading the block from disk a second time, and a
// block the disk no longer has (evicted meanwhile) or fails verification
// is fetched from the backend instead. It returns the flights started.
func (c *Cache) startPreload(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, blocks []int64) []*flight {
	if c.fresh == nil || len(blocks) == 0 {
		return nil
	}
	var keys []blockKey
	var fls []*flight
	c.fmu.Lock()
	for _, b := range blocks {
		k := blockKey{fk, b}
		if _, ok := c.memGet(k); ok || c.flights[k] != nil {
			continue
		}
		fl := newFlight()
		c.flights[k] = fl
		keys, fls = append(keys, k), append(fls, fl)
	}
	if len(fls) == 0 || c.closed.Load() {
		abortLocked(c.flights, keys, fls)
		c.fmu.Unlock()
		return nil
	}
	c.wg.Add(len(fls))
	c.fmu.Unlock()
	// One goroutine per block: the kernel sends a sequential reader's
	// READs several at a time, and they join these flights; loading the
	// blocks one after another would serialise reads the disk serves in
	// parallel.
	for i, fl := range fls {
		k := keys[i]
		go func() {
			defer c.wg.Done()
			ctx, done := c.detached(ctx)
			defer done()
			data, ok := c.disk.read(obj, fk, k.idx, false)
			if ok {
				c.st.diskHits.Add(1)
				c.met.hit(tierDisk)
			} else {
				start := k.idx * c.bs
				var err error
				if data, err = c.fetchRange(ctx, obj, fetch, start, min(start+c.bs, obj.Size), nil); err != nil {
					fl.err = fmt.Errorf("cache: fetch %s [%d, %d): %w", obj.Name, start, start+c.bs, err)
				} else {
					fl.storeErr = c.storeDisk(obj, fk, k.idx, [][]byte{data})
				}
			}
			if fl.err == nil {
				fl.data = data
				c.fresh.put(k, data)
			}
			close(fl.done)
			close(fl.stored)
			c.retire(fk, k.idx, []*flight{fl})
		}()
	}
	return fls
}

// memGet finds block k in memory: the RAM tier, or the blocks just
// fetched (fresh.go).
func (c *Cache) memGet(k blockKey) ([]byte, bool) {
	if c.ram == nil {
		return nil, false
	}
	if data, ok := c.ram.Get(k.ramKey()); ok {
		return data, true
	}
	return c.fresh.get(k)
}

// startLocked starts one fetch for the parts in run (consecutive blocks
// from block first). Must hold fmu.
func (c *Cache) startLocked(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, first int64, parts []part, run []int) {
	fls := make([]*flight, len(run))
	keys := runKeys(fk, first, len(run))
	for j, i := range run {
		fl := newFlight()
		fls[j] = fl
		c.flights[keys[j]] = fl
		parts[i].fl, parts[i].own = fl, true
		c.st.misses.Add(1)
		c.met.miss()
	}
	if c.closed.Load() {
		// Fail instead of starting a goroutine Close would not wait for.
		abortLocked(c.flights, keys, fls)
		return
	}
	c.wg.Add(1)
	go c.runFetch(ctx, obj, fk, fetch, first, fls)
}

// runFetch fetches one run and hands each block to its waiters and then to
// the tiers. It runs under a context that keeps the starting reader's
// values but not its cancellation, and ends only at Close.
func (c *Cache) runFetch(rctx context.Context, obj Object, fk fileKey, fetch FetchFunc, first int64, fls []*flight) {
	defer c.wg.Done()
	ctx, done := c.detached(rctx)
	defer done()
	start := first * c.bs
	end := min(start+int64(len(fls))*c.bs, obj.Size)
	// Separate buffers per block when the RAM tier will keep them and the
	// backend can fill them in one request; else one buffer, split below.
	var bufs [][]byte
	if len(fls) > 1 && c.ram != nil && obj.FetchV != nil {
		for i := range fls {
			s := start + int64(i)*c.bs
			bufs = append(bufs, make([]byte, min(s+c.bs, end)-s))
		}
	}
	buf, err := c.fetchRange(ctx, obj, fetch, start, end, bufs)
	if err != nil {
		// Retire first: a reader arriving after the error starts afresh
		// rather than inheriting it.
		c.retire(fk, first, fls)
		err = fmt.Errorf("cache: fetch %s [%d, %d): %w", obj.Name, start, end, err)
		for _, fl := range fls {
			fl.fail(err)
		}
		return
	}
	// The fetch proved that the identity it ran for may read obj: a reader
	// with that identity that joined the flight, or hits these blocks
	// later, needs no Validate of its own. Readahead fills and prefetches
	// start most flights of a scan, so without this every file's first
	// reader sent a HEAD (94 of them in a cold GPU-feed epoch of 160 files).
	c.ids.add(fk, obj.Credential)
	blocks := make([][]byte, len(fls))
	for i, fl := range fls {
		var data []byte
		if bufs != nil {
			data = bufs[i]
		} else {
			s := int64(i) * c.bs
			e := min(s+c.bs, int64(len(buf)))
			data = buf[s:e:e]
			if len(fls) > 1 && c.ram != nil {
				// Own memory per block, so the RAM tier's accounting holds.
				data = bytes.Clone(data)
			}
		}
		blocks[i] = data
		fl.data = data
		c.fresh.put(blockKey{fk, first + int64(i)}, data)
		close(fl.done)
	}
	if c.ram != nil {
		for i, data := range blocks {
			c.ram.Set(blockKey{fk, first + int64(i)}.ramKey(), data, int64(len(data)))
		}
		// ristretto applies Sets asynchronously; until it has, the block
		// must stay findable through its flight.
		c.ram.Wait()
	}
	var storeErr error
	if c.disk != nil {
		c.awaitPredecessor(ctx, fk, first)
		storeErr = c.storeDisk(obj, fk, first, blocks)
	}
	for _, fl := range fls {
		fl.storeErr = storeErr
		close(fl.stored)
	}
	c.retire(fk, first, fls)
}

// prefetchFetch marks, in a fetch's context, a prefetch fill (prefetchSem).
type prefetchFetch struct{}

// storeOrderWait bounds how long a fetched run waits for the run before
// it to be stored (awaitPredecessor).
const storeOrderWait = 500 * time.Millisecond

// awaitPredecessor waits until the block just before first, if a fetch of
// it is in flight, has been stored, so that a scan's blocks reach the data
// file in order and the file system lays them out contiguously. Readahead
// fetches run in parallel and finish in any order; in a simulation of
// that write pattern a 512 MiB file ended in 62 extents out of order,
// which the kernel's buffered readahead (FUSE passthrough reads the file
// that way) read at 617 MB/s against 1.9 GB/s for the same bytes written
// in order (dd, page cache dropped). Readers are not delayed: they already have
// the bytes. A stalled predecessor delays the write by storeOrderWait.
func (c *Cache) awaitPredecessor(ctx context.Context, fk fileKey, first int64) {
	if first == 0 {
		return
	}
	c.fmu.Lock()
	prev := c.flights[blockKey{fk, first - 1}]
	c.fmu.Unlock()
	if prev == nil {
		return
	}
	t := time.NewTimer(storeOrderWait)
	defer t.Stop()
	select {
	case <-prev.stored:
	case <-t.C:
	case <-ctx.Done():
	}
}

// detached returns a context for work started on a reader's behalf that
// must outlive the reader: it keeps rctx's values, not its cancellation,
// and ends at Close (cause ErrClosed). done releases it.
func (c *Cache) detached(rctx context.Context) (ctx context.Context, done func()) {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(rctx))
	stop := context.AfterFunc(c.life, func() { cancel(ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// fetchRange reads [start, end) through fetch, bounded by the inflight
// limit, and insists on every byte. With bufs (which tile the range) it
// reads into them through obj.FetchV and returns nil bytes.
func (c *Cache) fetchRange(ctx context.Context, obj Object, fetch FetchFunc, start, end int64, bufs [][]byte) ([]byte, error) {
	if ctx.Value(prefetchFetch{}) != nil {
		select {
		case c.prefetchSem <- struct{}{}:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		defer func() { <-c.prefetchSem }()
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	var buf []byte
	t0 := time.Now()
	var n int
	var err error
	if bufs != nil {
		n, err = safeFetch(ctx, func(ctx context.Context, _ []byte, off int64) (int, error) {
			return obj.FetchV(ctx, bufs, off)
		}, nil, start)
	} else {
		buf = make([]byte, end-start)
		n, err = safeFetch(ctx, fetch, buf, start)
	}
	<-c.sem
	c.met.fetched(time.Since(t0), n)
	c.st.fetches.Add(1)
	c.st.fetchedBytes.Add(uint64(max(n, 0)))
	switch {
	case int64(n) == end-start && (err == nil || errors.Is(err, io.EOF)):
		return buf, nil
	case err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("backend returned %d of %d bytes, so the blob is shorter than size %d: %w",
			n, end-start, obj.Size, blob.ErrStale)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return nil, err
}

// safeFetch turns a panicking FetchFunc into an error: it runs on a
// goroutine of the cache, where a panic would kill the process.
func safeFetch(ctx context.Context, fetch FetchFunc, p []byte, off int64) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("cache: FetchFunc panicked: %v", r)
		}
	}()
	return fetch(ctx, p, off)
}

// storeDisk offers blocks to the disk tier; a failure degrades to serving
// from the backend, with one warning per episode.
func (c *Cache) storeDisk(obj Object, fk fileKey, first int64, blocks [][]byte) error {
	err := c.disk.admit(obj, fk, first, blocks)
	// Room held by blocks being written comes back as soon as they
	// commit (a local write): wait for it a little rather than drop the
	// block or evict the hot set. Readers already have the bytes; only
	// Fill waits for this.
	for wait := time.Now().Add(time.Second); errors.Is(err, errBusy) && time.Now().Before(wait) && !c.closed.Load(); {
		time.Sleep(5 * time.Millisecond)
		err = c.disk.admit(obj, fk, first, blocks)
	}
	if err == nil {
		if c.disk.degraded.Swap(false) {
			c.log.Info("cache: storing blocks on disk again", "dir", c.disk.dir)
		}
		return nil
	}
	if errors.Is(err, errForeign) {
		return err
	}
	if errors.Is(err, errBusy) {
		c.log.Debug("cache: not storing a block while others are being written", "err", err)
		return err
	}
	c.st.writeFailures.Add(1)
	c.met.writeFailed()
	if !c.disk.degraded.Swap(true) {
		c.log.Warn("cache: cannot store blocks on disk; serving from the backend", "dir", c.disk.dir, "err", err)
	} else {
		c.log.Debug("cache: cannot store blocks on disk", "err", err)
	}
	return err
}

// retire removes a run's flights from the map.
func (c *Cache) retire(fk fileKey, first int64, fls []*flight) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	for i, fl := range fls {
		k := blockKey{fk, first + int64(i)}
		if c.flights[k] == fl {
			delete(c.flights, k)
		}
	}
	c.flightGen.Add(1)
}

// wait waits for a flight's data, or for ctx.
func (c *Cache) wait(ctx context.Context, obj Object, fl *flight) ([]byte, error) {
	select {
	case <-fl.done:
		return fl.data, fl.err
	case <-ctx.Done():
		return nil, fmt.Errorf("cache: read %s: %w", obj.Name, ctx.Err())
	}
}

// validate makes sure obj.Credential may read obj before cached bytes are
// served to it.
func (c *Cache) validate(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc) error {
	if c.ids.has(fk, obj.Credential) {
		return nil
	}
	var err error
	if obj.Validate != nil {
		err = obj.Validate(ctx)
	} else {
		var one [1]byte
		if _, err = fetch(ctx, one[:], 0); errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("cache: %s may not be served to this identity: %w", obj.Name, err)
	}
	c.st.validations.Add(1)
	c.ids.add(fk, obj.Credential)
	return nil
}

// Fill makes sure [off, off+length) of obj is cached (on disk when there is
// a disk tier), fetching what is missing through the same path as read
// misses. It returns the fetch error, or the store error (ErrNoSpace when
// nothing more is evictable, or the disk's own error such as ENOSPC) of a
// block the disk tier could not take. With Pin, the range is then pinned;
// ErrNoSpace (wrapped) means part of it could not be stored or pinned.
// Blocks other readers evict while a large unpinned Fill runs are not
// reported. Fill serves no bytes, so it does not validate the identity.
func (c *Cache) Fill(ctx context.Context, obj Object, fetch FetchFunc, off, length int64, opts FillOptions) error {
	if err := c.check(obj, fetch); err != nil {
		return err
	}
	if opts.Pin && c.disk == nil {
		return fmt.Errorf("cache: pinning needs a disk tier: %w", fs.ErrInvalid)
	}
	first, last, ok := c.blockRange(obj, off, length)
	if !ok {
		return nil
	}
	fk := keyOf(obj)
	for attempt := 0; ; attempt++ {
		if err := c.startFill(ctx, obj, fk, fetch, first, last, opts, true).Wait(); err != nil {
			return err
		}
		if !opts.Pin {
			return nil
		}
		missing, err := c.disk.setPinned(obj, fk, first, last, true)
		if err != nil {
			return err
		}
		if missing == 0 {
			return nil
		}
		if attempt == 1 {
			return fmt.Errorf("cache: pin %s: %d of %d blocks could not be stored: %w", obj.Name, missing, last-first+1, ErrNoSpace)
		}
	}
}

// FillHandle is a fill started by StartFill.
type FillHandle struct {
	wait    func() error
	flights []*flight
}

// Wait waits for the fill (see StartFill for what it waits for).
func (h *FillHandle) Wait() error { return h.wait() }

// Fetched reports, without blocking, whether every block the fill fetched
// or joined has arrived (or failed).
func (h *FillHandle) Fetched() bool {
	for _, fl := range h.flights {
		select {
		case <-fl.done:
		default:
			return false
		}
	}
	return true
}

// StartFill is readahead's Fill: the blocks are looked up and their
// fetches started (or joined) before it returns, so a read that follows
// joins them instead of fetching the same blocks again. Wait then waits
// until their bytes have arrived — not until the disk has them, which
// Fill waits for: a fetched block is served from its flight (and the RAM
// tier) meanwhile, and holding readahead back for local writes would let
// the reader catch up with it.
func (c *Cache) StartFill(ctx context.Context, obj Object, fetch FetchFunc, off, length int64) *FillHandle {
	if err := c.check(obj, fetch); err != nil {
		return &FillHandle{wait: func() error { return err }}
	}
	first, last, ok := c.blockRange(obj, off, length)
	if !ok {
		return &FillHandle{wait: func() error { return nil }}
	}
	return c.startFill(ctx, obj, keyOf(obj), fetch, first, last, FillOptions{}, false)
}

// startFill plans blocks first..last for a fill (starting the fetches of
// the missing ones) and returns the handle that waits for them to be
// fetched and, if stored is set, stored.
func (c *Cache) startFill(ctx context.Context, obj Object, fk fileKey, fetch FetchFunc, first, last int64, opts FillOptions, stored bool) *FillHandle {
	type window struct {
		first int64
		parts []part
	}
	var ws []window
	var preload []int64 // readahead: blocks to bring from disk into memory
	h := &FillHandle{}
	if opts.Prefetch {
		ctx = context.WithValue(ctx, prefetchFetch{}, true)
	}
	for w := first; w <= last; w += c.window {
		parts := c.plan(ctx, obj, fk, fetch, w, min(last, w+c.window-1), true)
		for i, pt := range parts {
			if pt.fl != nil {
				h.flights = append(h.flights, pt.fl)
			}
			if pt.onDisk && !stored {
				preload = append(preload, w+int64(i))
			}
		}
		ws = append(ws, window{w, parts})
	}
	h.flights = append(h.flights, c.startPreload(ctx, obj, fk, fetch, preload)...)
	h.wait = func() error {
		for _, w := range ws {
			for i, pt := range w.parts {
				if pt.fl == nil || !pt.own && opts.LeaveJoined && !opts.Pin {
					continue
				}
				if !stored {
					if _, err := c.wait(ctx, obj, pt.fl); err != nil {
						return err
					}
					continue
				}
				select {
				case <-pt.fl.stored:
					if pt.fl.err != nil {
						return pt.fl.err
					}
					if pt.own {
						c.filled(blockKey{fk, w.first + int64(i)}, pt.fl, opts)
					}
					if pt.fl.storeErr != nil && !opts.Pin {
						return fmt.Errorf("cache: fill %s: %w", obj.Name, pt.fl.storeErr)
					}
				case <-ctx.Done():
					return fmt.Errorf("cache: fill %s: %w", obj.Name, ctx.Err())
				}
			}
		}
		return nil
	}
	return h
}

// Unpin makes [off, off+length) of obj evictable again.
func (c *Cache) Unpin(ctx context.Context, obj Object, off, length int64) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	first, last, ok := c.blockRange(obj, off, length)
	if !ok || c.disk == nil {
		return nil
	}
	_, err := c.disk.setPinned(obj, keyOf(obj), first, last, false)
	return err
}

// blockRange clamps [off, off+length) to obj and returns its blocks.
func (c *Cache) blockRange(obj Object, off, length int64) (first, last int64, ok bool) {
	off = max(off, 0)
	end := min(obj.Size, off+length)
	if length <= 0 || off >= end {
		return 0, 0, false
	}
	return off / c.bs, (end - 1) / c.bs, true
}

// Forget drops every cached block of obj (pinned ones included) from both
// tiers. Blocks a concurrent fetch is storing right now may survive, and
// so do random-read units in RAM (the same immutable bytes; they age out).
func (c *Cache) Forget(ctx context.Context, obj Object) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fk := keyOf(obj)
	c.forgetRAM(fk, nblocksOf(obj.Size, c.bs))
	if c.disk == nil {
		return nil
	}
	_, err := c.disk.forget(fk)
	return err
}

// ForgetStale drops the cached versions of obj's blob other than obj.ETag
// (the caller saw the blob change) and returns how many it dropped. Only
// versions on disk can be found; stale RAM blocks can never be served
// (the ETag is part of the key) and age out.
func (c *Cache) ForgetStale(ctx context.Context, obj Object) (int, error) {
	if c.closed.Load() {
		return 0, ErrClosed
	}
	if c.disk == nil {
		return 0, nil
	}
	var n int
	for _, fk := range c.disk.staleSiblings(obj, keyOf(obj)) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		nb, err := c.disk.forget(fk)
		if err != nil {
			return n, err
		}
		c.forgetRAM(fk, nb)
		n++
	}
	return n, nil
}

func (c *Cache) forgetRAM(fk fileKey, nblocks int64) {
	if c.ram == nil {
		return
	}
	c.fresh.forget(fk)
	for b := range nblocks {
		c.ram.Del(blockKey{fk, b}.ramKey())
	}
}

// Status reports how much of obj the disk tier holds.
func (c *Cache) Status(ctx context.Context, obj Object) (ObjectStatus, error) {
	if c.closed.Load() {
		return ObjectStatus{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return ObjectStatus{}, err
	}
	if c.disk == nil {
		return ObjectStatus{Size: obj.Size, BlockSize: c.bs, Blocks: nblocksOf(obj.Size, c.bs)}, nil
	}
	return c.disk.status(obj, keyOf(obj))
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		BlockSize:        c.bs,
		RAMHits:          c.st.ramHits.Load(),
		DiskHits:         c.st.diskHits.Load(),
		Misses:           c.st.misses.Load(),
		Fetches:          c.st.fetches.Load(),
		FetchedBytes:     c.st.fetchedBytes.Load(),
		DiskReadBytes:    c.st.diskReadBytes.Load(),
		DiskWriteBytes:   c.st.diskWriteBytes.Load(),
		Evictions:        c.st.evictions.Load(),
		ChecksumFailures: c.st.checksumFailures.Load(),
		WriteFailures:    c.st.writeFailures.Load(),
		Validations:      c.st.validations.Load(),
		RangeHits:        c.st.rangeHits.Load(),
		RangeMisses:      c.st.rangeMisses.Load(),
		Backings:         c.st.backings.Load(),
		BackingWaits:     c.st.backingWaits.Load(),
	}
	if c.disk != nil {
		s.DiskBudget = c.disk.budget
		s.DiskUsed = c.disk.usedNow()
	}
	if c.ram != nil {
		s.MemBudget = c.ram.MaxCost() + c.fresh.cap
		s.MemUsed = c.ram.MaxCost() - c.ram.RemainingCost() + c.fresh.used()
	}
	return s
}

// identities remembers which credentials have shown they may read which
// (blob, ETag) in this process.
type identities struct {
	mu sync.Mutex
	// seen is reset when it reaches maxIdentities; the cost is one more
	// Validate per reader. GUARDED_BY(mu)
	seen map[identityKey]struct{}
}

type identityKey struct {
	fk   fileKey
	cred string
}

const maxIdentities = 1 << 16

func (ids *identities) has(fk fileKey, cred string) bool {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	_, ok := ids.seen[identityKey{fk, cred}]
	return ok
}

func (ids *identities) add(fk fileKey, cred string) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.seen == nil || len(ids.seen) >= maxIdentities {
		ids.seen = map[identityKey]struct{}{}
	}
	ids.seen[identityKey{fk, cred}] = struct{}{}
}

// StoreFetch returns the FetchFunc that reads name from s pinned to etag.
func StoreFetch(s blob.Store, name string, etag blob.ETag) FetchFunc {
	return func(ctx context.Context, p []byte, off int64) (int, error) {
		return s.ReadAt(ctx, name, etag, p, off)
	}
}

// StoreFetchV returns the FetchVFunc that reads name from s pinned to etag
// into several buffers with one request (blob.ReadAtV), or nil when s
// cannot (the cache then copies instead).
func StoreFetchV(s blob.Store, name string, etag blob.ETag) FetchVFunc {
	if _, ok := s.(blob.VectorReader); !ok {
		return nil
	}
	return func(ctx context.Context, bufs [][]byte, off int64) (int, error) {
		return blob.ReadAtV(ctx, s, name, etag, bufs, off)
	}
}

// StoreValidate returns an Object.Validate that checks with s's credential
// that name still has etag (a HEAD).
func StoreValidate(s blob.Store, name string, etag blob.ETag) func(context.Context) error {
	return func(ctx context.Context) error {
		a, err := s.Stat(ctx, name)
		if err != nil {
			return err
		}
		if canonicalETag(a.ETag) != canonicalETag(etag) {
			return fmt.Errorf("cache: %s is now %s, not %s: %w", name, a.ETag, etag, blob.ErrStale)
		}
		return nil
	}
}

// canonicalETag is an ETag's value without the quotes HTTP puts around it:
// the service quotes ETags in headers (HEAD, GET) but not in listings, so
// one version arrives spelled two ways, and the cache keys versions by
// value.
func canonicalETag(e blob.ETag) blob.ETag {
	s := string(e)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return blob.ETag(s)
}
