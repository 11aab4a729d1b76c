package cache

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"

	"github.com/blobfs/blobfs/blob"
)

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	// Account and Container complete the cache key of every blob read.
	Account, Container string
	// KeyPrefix is prepended to names in cache keys: the store may be a
	// subdirectory view (blob.WithPrefix) and the cache, shared by every
	// mount on the node, keys by full blob names.
	KeyPrefix string
	// Identity names the credential the store uses (never a secret): a
	// mount with another identity revalidates before its first hit.
	Identity string
	// ReadaheadBytes is the largest window a sequential reader is kept
	// ahead of; zero disables readahead.
	ReadaheadBytes int64
	// FetchAtOpen: OpenBacking fetches an object up to this size (at most
	// awaitWholeMax) that the cache does not hold whole, and waits for it,
	// so that its open can be handed to the kernel. Zero disables it.
	FetchAtOpen int64
	// MaxStreams bounds the objects whose streams are tracked at once
	// (default 1024); the oldest is forgotten first.
	MaxStreams int
	Logger     *slog.Logger
}

// Reader serves a store's committed blobs through the cache, telling
// sequential readers from random ones. It is the filesystem's read path:
// the same Cache.ReadAt and Cache.Fill that prefetch uses, so there is one
// way bytes enter the cache.
//
// Detection works per (blob, ETag) on up to streamsPerObject streams, so
// several handles reading one file (DataLoader workers, a reader plus a
// checksummer) each keep their own stream without the filesystem naming
// handles. A read continues a stream when it lands within slack of the
// range the stream has read; slack grows with the read's size (4× the
// read, from 64 KiB up to seqSlack), because the kernel delivers a
// sequential reader's readahead as concurrent READs of up to 1 MiB that
// arrive slightly out of order, while a random 4 KiB read should not be
// mistaken for a neighbour's continuation.
//
// Sequential: a stream that starts at offset 0 (or with a large read near
// it), or that has been continued seqAfter times (once, by a large read),
// is sequential. Its window starts at
// initialWindow and doubles on every read up to ReadaheadBytes (like
// Mountpoint's prefetcher); the window ahead of the reader is kept full
// with background Fills of ReadaheadChunk (8 MiB: the range size the
// backend serves fastest), window/ReadaheadChunk in flight at once, so a
// cold scan turns into parallel 8 MiB GETs like a parallel download. Its
// reads go through Cache.ReadAt (whole blocks, kept on disk).
//
// Random: any other read. It starts no readahead, and a small one (up to
// smallRead) goes through Cache.ReadRandomAt: cached blocks still serve it,
// but a cold 4 KiB read fetches one 4 KiB range (kept in RAM), not a 1 MiB
// block. A larger random read uses whole blocks.
type Reader struct {
	c     *Cache
	store blob.Store
	opts  ReaderOptions
	// ctx bounds background fills; cancelled by Close.
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// GUARDED_BY(mu)
	streams map[streamKey]*objStreams
	order   []streamKey // insertion order, for bounding
}

type streamKey struct {
	name string
	etag blob.ETag
}

// objStreams are the streams of one (blob, ETag), most recently used last.
type objStreams struct {
	list []*stream
}

type stream struct {
	// [start, next) is what the stream has read: a read near either end
	// continues it.
	start, next int64
	hits        int   // reads that continued the stream
	seq         bool  // judged sequential (for good: a far read starts another stream)
	window      int64 // readahead window; 0 until the stream is sequential
	// filled: readahead has been requested up to here.
	filled   int64
	inflight int          // background fills running
	pending  []*fillRange // the fills counted in inflight
	// forgotten: no longer tracked (a newer stream or object took its
	// slot); its running fills end without starting more.
	forgotten bool
}

const (
	// ReadaheadChunk is the size of one readahead fill: one backend GET.
	ReadaheadChunk = 8 << 20
	// seqSlack is the largest distance from a stream at which a read still
	// continues it: the kernel's own readahead window (read_ahead_kb 4096).
	seqSlack = 4 << 20
	// minSlack is the distance within which even a small read continues a
	// stream.
	minSlack = 64 << 10
	// seqAfter is how many reads must continue a stream (that did not
	// start at offset 0) before it counts as sequential. Two keeps a
	// random reader's chance coincidences from starting readahead.
	seqAfter = 2
	// initialWindow is a new sequential stream's readahead window; it
	// doubles with every read.
	initialWindow = 2 << 20
	// streamsPerObject bounds the streams tracked per (blob, ETag).
	streamsPerObject = 8
	// smallRead is the largest random read served in range units rather
	// than whole blocks.
	smallRead = 256 << 10

	// wholeFileWindow: a file up to this size whose first read is a large
	// one near its start gets a window of the whole file at once (advance).
	wholeFileWindow = 64 << 20
)

// NewReader returns a Reader over store that caches in c.
func NewReader(c *Cache, store blob.Store, opts ReaderOptions) *Reader {
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Reader{c: c, store: store, opts: opts, ctx: ctx, cancel: cancel, streams: map[streamKey]*objStreams{}}
}

// Close stops background readahead.
func (r *Reader) Close() { r.cancel() }

func (r *Reader) object(name string, etag blob.ETag, size int64) Object {
	return Object{
		Account: r.opts.Account, Container: r.opts.Container,
		Name: r.opts.KeyPrefix + name, ETag: canonicalETag(etag), Size: size,
		Credential: r.opts.Identity,
		Validate:   StoreValidate(r.store, name, etag),
		FetchV:     StoreFetchV(r.store, name, etag),
	}
}

// ReadAt reads without knowing the size, so it cannot use the cache: it
// goes straight to the store. The filesystem calls ReadAtSized.
func (r *Reader) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	return r.store.ReadAt(ctx, name, etag, p, off)
}

// ReadAtSized reads blob name at etag (whose size is size) into p at off,
// with io.ReaderAt semantics.
func (r *Reader) ReadAtSized(ctx context.Context, name string, etag blob.ETag, size int64, p []byte, off int64) (int, error) {
	obj := r.object(name, etag, size)
	fetch := StoreFetch(r.store, name, etag)
	n := min(int64(len(p)), size-off)
	if off < 0 || n <= 0 {
		return r.c.ReadAt(ctx, obj, fetch, p, off) // the cache's own errors and EOF
	}
	if !r.advance(obj, fetch, off, n) && n <= smallRead {
		return r.c.ReadRandomAt(ctx, obj, fetch, p, off)
	}
	return r.c.ReadAt(ctx, obj, fetch, p, off)
}

// advance records a read of [off, off+n) of obj, reports whether it is
// sequential, and for a sequential stream tops up the window ahead of the
// reader with chunk-sized background fills.
func (r *Reader) advance(obj Object, fetch FetchFunc, off, n int64) (sequential bool) {
	var fills []*fillRange
	defer func() { r.startFills(obj, fetch, fills) }() // after mu is released
	k := streamKey{obj.Name, obj.ETag}
	r.mu.Lock()
	defer r.mu.Unlock()
	objs := r.streams[k]
	if objs == nil {
		objs = &objStreams{}
		r.track(k, objs)
	}
	end := off + n
	slack := min(max(4*n, minSlack), seqSlack)
	var s *stream
	for i := len(objs.list) - 1; i >= 0; i-- {
		if c := objs.list[i]; off <= c.next+slack && end >= c.start-slack {
			s = c
			objs.list = append(objs.list[:i], objs.list[i+1:]...)
			break
		}
	}
	big := n > smallRead
	fresh := false
	switch {
	case s != nil && off+slack < s.next:
		// Far behind the stream's head, near its start: the file is being
		// read again (the next epoch, a second pass). Restart the stream
		// there; a stream that kept its old head would see nothing left
		// to read ahead, and the pass would run on demand reads alone.
		s.hits++
		s.start, s.next = off, end
		s.filled = 0 // recomputed below, from the new head
	case s != nil:
		s.hits++
		s.start, s.next = min(s.start, off), max(s.next, end)
		// Two large reads in a row are a scan (the kernel's readahead
		// READs); small ones need seqAfter continuations.
		s.seq = s.seq || s.hits >= seqAfter || big
	default:
		// The start of a file is read sequentially far more often than
		// not; so is a file whose first read is a large one near its
		// start (the kernel's first readahead READs arrive in any order).
		s = &stream{start: off, next: end, seq: off == 0 || big && off < seqSlack}
		fresh = true
	}
	if len(objs.list) == streamsPerObject {
		objs.list[0].forgotten = true
		objs.list = objs.list[1:]
	}
	objs.list = append(objs.list, s)
	if !s.seq {
		return false
	}
	if r.opts.ReadaheadBytes <= 0 || fresh && !big {
		// A file's first small read (open, read a header) waits for its
		// own block only: readahead fetches started beside it competed
		// with it at the backend and tripled the time to its first byte
		// (16-20 ms instead of about 5 on Azurite). The next read, if
		// it continues, starts them.
		return true
	}
	// A fresh stream that got here began with a large read near the
	// file's start (a small first read returned above, a far one is not
	// sequential): the kernel's readahead of a buffered read, whose first
	// READs arrive in any order. A shard-sized file read that way is read
	// whole far more often than not, so all of it is fetched now, in
	// parallel chunks, as rclone's chunk streams and BlobFuse2's prefetch
	// do. Ramping the window up read by read left a 16 MiB shard two or
	// three round trips behind theirs (BENCHMARKS.md, the 16-core GPU
	// feed; the gain there is within the run-to-run spread so far).
	wholeFile := fresh && obj.Size <= wholeFileWindow
	if s.window == 0 {
		s.window = min(initialWindow, r.opts.ReadaheadBytes)
		if wholeFile {
			s.window = min(max(s.window, obj.Size), r.opts.ReadaheadBytes)
		}
	} else {
		s.window = min(2*s.window, r.opts.ReadaheadBytes)
	}
	switch {
	case wholeFile:
		// The fills start at the file's first byte and the reader's own
		// read joins the first: one GET per chunk, not one more for the
		// reader's block. Azurite spends its single thread per request,
		// and a 16 MiB shard cost three.
		s.filled = 0
	case s.filled < s.next:
		// Start at the block after the reader: the reader's next reads
		// then join these fills instead of fetching one block each.
		bs := r.c.BlockSize()
		s.filled = (s.next + bs - 1) / bs * bs
	}
	fills = r.topUp(s, obj)
	return true
}

// fillRange is one readahead fill: a chunk of one stream.
type fillRange struct {
	s             *stream
	start, length int64
	h             *FillHandle // set once started
	done          bool        // counted out of s.inflight
}

// topUp reaps the stream's fills whose bytes have arrived, then reserves
// new ones until the stream's window is covered or window/ReadaheadChunk
// fills are running, and returns them for startFills (which must run
// without mu: starting a fill looks blocks up on disk). Fills are whole
// chunks even while the window is smaller: one 8 MiB GET beats several
// small ones; the window bounds how far ahead and how many run at once.
//
// It runs on every read of the stream and again whenever one of its fills
// ends. Refilling only on reads would drain the pipeline exactly when it
// matters: a reader blocked on its next block issues no reads, so the
// finished fills behind it would not be replaced until it caught up
// (measured: 5.6 fetches in flight on average out of 16, on a cold scan).
// Reaping on reads too keeps a reader that is ahead of the goroutines
// waiting for fills from finding every slot still taken.
// Caller holds r.mu.
func (r *Reader) topUp(s *stream, obj Object) []*fillRange {
	live := s.pending[:0]
	for _, f := range s.pending {
		if !f.done && f.h != nil && f.h.Fetched() {
			f.done = true
			s.inflight--
		}
		if !f.done {
			live = append(live, f)
		}
	}
	clear(s.pending[len(live):])
	s.pending = live
	var fills []*fillRange
	maxInflight := int(max(s.window/ReadaheadChunk, 1))
	for !s.forgotten && r.ctx.Err() == nil && s.filled < obj.Size && s.filled < s.next+s.window && s.inflight < maxInflight {
		f := &fillRange{s: s, start: s.filled, length: min(ReadaheadChunk, obj.Size-s.filled)}
		s.filled += f.length
		s.inflight++
		s.pending = append(s.pending, f)
		fills = append(fills, f)
	}
	return fills
}

// startFills starts fills: their fetches are registered before it returns,
// so the reader's own read, which comes next, joins them rather than
// fetching the same blocks. Each fill, when its bytes are in, tops its
// stream up again.
func (r *Reader) startFills(obj Object, fetch FetchFunc, fills []*fillRange) {
	for _, f := range fills {
		h := r.c.StartFill(r.ctx, obj, fetch, f.start, f.length)
		r.mu.Lock()
		f.h = h
		r.mu.Unlock()
		go func() {
			err := h.Wait()
			if err != nil && r.ctx.Err() == nil {
				// The reader fetches what is missing itself; nothing to undo.
				r.opts.Logger.Debug("readahead failed", "blob", obj.Name, "off", f.start, "len", f.length, "err", err)
			}
			r.mu.Lock()
			if !f.done {
				f.done = true
				f.s.inflight--
			}
			var more []*fillRange
			if err == nil {
				more = r.topUp(f.s, obj)
			}
			r.mu.Unlock()
			r.startFills(obj, fetch, more)
		}()
	}
}

// track remembers an object's streams, forgetting the oldest object beyond
// MaxStreams. Caller holds mu.
func (r *Reader) track(k streamKey, objs *objStreams) {
	r.streams[k] = objs
	r.order = append(r.order, k)
	for len(r.order) > r.opts.MaxStreams {
		if old := r.streams[r.order[0]]; old != nil {
			for _, s := range old.list {
				s.forgotten = true
			}
		}
		delete(r.streams, r.order[0])
		r.order = r.order[1:]
	}
}

// OpenBacking returns the local file of name at etag when the cache holds
// it whole and verified (Cache.OpenBacking), for FUSE passthrough. The
// result type is fs.Backing's.
func (r *Reader) OpenBacking(ctx context.Context, name string, etag blob.ETag, size int64) (interface {
	File() *os.File
	Close() error
}, error) {
	obj := r.object(name, etag, size)
	b, err := r.c.OpenBacking(ctx, obj)
	if errors.Is(err, ErrNoBacking) && size >= fetchAtOpenMin && size <= min(r.opts.FetchAtOpen, awaitWholeMax) {
		// Not cached whole: fetch the rest now, in readahead-sized
		// chunks side by side, and wait for it (Cache.OpenBacking waits
		// for fetches in flight). A data loader reads a shard whole, and
		// every byte it would read through the daemon costs a FUSE reply
		// the kernel copies; handed to the kernel, the shard is read from
		// the cache file instead. GPU feed, full size, 2 cores: every cold
		// open passthrough instead of a third, the daemon's CPU in the
		// first epoch down by 40%, the stall after the first shard from
		// 45% to 22% (BENCHMARKS.md). The price: an open of a file up to
		// FetchAtOpen that only wants its header waits for all of it,
		// in parallel chunks, and brings all of it in.
		r.startWholeFetch(obj, StoreFetch(r.store, name, etag))
		b, err = r.c.OpenBacking(ctx, obj)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// fetchAtOpenMin is the smallest object fetched at open: a file the kernel
// reads in one FUSE request (max_write, 1 MiB) costs one reply either way,
// and passthrough only adds its setup (the backing file, its lease, the
// kernel's registration). 1000 cold 64 KiB files read by 8 workers:
// 557 files/s streamed, 508 handed over (BENCHMARKS.md).
const fetchAtOpenMin = 1 << 20

// startWholeFetch starts fills of every block of obj not cached, as
// ReadaheadChunk-sized fetches that run side by side. They belong to the
// Reader (its context), not to the open that asked: a reader that gives
// up waiting still finds them in flight and joins them.
func (r *Reader) startWholeFetch(obj Object, fetch FetchFunc) {
	chunk := max(int64(ReadaheadChunk), r.c.BlockSize())
	for off := int64(0); off < obj.Size; off += chunk {
		h := r.c.StartFill(r.ctx, obj, fetch, off, min(chunk, obj.Size-off))
		go func() {
			if err := h.Wait(); err != nil && r.ctx.Err() == nil {
				// The open goes through the daemon, whose reads fetch
				// what is missing and report the error.
				r.opts.Logger.Debug("fetch at open failed", "blob", obj.Name, "off", off, "err", err)
			}
		}()
	}
}
