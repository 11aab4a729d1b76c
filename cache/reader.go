package cache

import (
	"context"
	"log/slog"
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
	// MaxStreams bounds the sequential streams tracked at once
	// (default 1024); the oldest is forgotten first.
	MaxStreams int
	Logger     *slog.Logger
}

// Reader serves a store's committed blobs through the cache, with
// adaptive sequential readahead. It is the filesystem's read path: the
// same Cache.ReadAt and Cache.Fill that prefetch uses, so there is one way
// bytes enter the cache.
//
// Readahead: a read that starts where the previous read of the same
// (blob, ETag) ended extends a stream. The window starts at one chunk
// (ReadaheadChunk, 8 MiB: the range size the backend serves fastest) and
// doubles on every sequential read up to ReadaheadBytes. The window ahead
// of the reader is kept full with chunk-aligned background Fills, several
// in flight at once, so a cold sequential scan turns into parallel 8 MiB
// GETs like a parallel download rather than one block at a time. A random
// read resets the stream, so random access never drags extra bytes over
// the network.
type Reader struct {
	c     *Cache
	store blob.Store
	opts  ReaderOptions
	// ctx bounds background fills; cancelled by Close.
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// GUARDED_BY(mu)
	streams map[streamKey]*stream
	order   []streamKey // insertion order, for bounding
}

type streamKey struct {
	name string
	etag blob.ETag
}

type stream struct {
	next   int64 // where a sequential read would start
	window int64
	// filled: readahead has been requested up to here.
	filled   int64
	inflight int // background fills running
}

// ReadaheadChunk is the size of one readahead fill: one backend GET.
const ReadaheadChunk = 8 << 20

// seqSlack is how far from a stream's frontier a read may land and still
// be sequential: the kernel's own readahead window (read_ahead_kb 4096).
const seqSlack = 4 << 20

// NewReader returns a Reader over store that caches in c.
func NewReader(c *Cache, store blob.Store, opts ReaderOptions) *Reader {
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Reader{c: c, store: store, opts: opts, ctx: ctx, cancel: cancel, streams: map[streamKey]*stream{}}
}

// Close stops background readahead.
func (r *Reader) Close() { r.cancel() }

func (r *Reader) object(name string, etag blob.ETag, size int64) Object {
	return Object{
		Account: r.opts.Account, Container: r.opts.Container,
		Name: r.opts.KeyPrefix + name, ETag: etag, Size: size,
		Credential: r.opts.Identity,
		Validate:   StoreValidate(r.store, name, etag),
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
	n, err := r.c.ReadAt(ctx, obj, fetch, p, off)
	if r.opts.ReadaheadBytes > 0 && n > 0 {
		r.readahead(obj, fetch, off, int64(n))
	}
	return n, err
}

// readahead advances the stream for obj and tops up the window ahead of
// the reader with chunk-sized background fills.
func (r *Reader) readahead(obj Object, fetch FetchFunc, off, n int64) {
	k := streamKey{obj.Name, obj.ETag}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.streams[k]
	if s == nil {
		s = &stream{}
		r.track(k, s)
	}
	// The kernel sends a sequential reader's readahead as several
	// concurrent READs, which arrive slightly out of order: a read within
	// seqSlack of the stream's frontier still counts as sequential.
	near := off >= s.next-seqSlack && off <= s.next+seqSlack
	switch {
	case near && (s.window > 0 || s.next == 0 && off < seqSlack):
		// Sequential (or the start of a file): grow the window.
		s.window = min(max(2*s.window, ReadaheadChunk), r.opts.ReadaheadBytes)
		s.next = max(s.next, off+n)
	default:
		// Random: no readahead until the reader is sequential again.
		s.window = 0
		s.filled = 0
		s.next = off + n
	}
	if s.window == 0 {
		return
	}
	if s.filled < s.next {
		// Start at the block after the reader: the reader's next reads
		// then join these fills instead of fetching one block each.
		bs := r.c.BlockSize()
		s.filled = (s.next + bs - 1) / bs * bs
	}
	maxInflight := int(max(s.window/ReadaheadChunk, 1))
	for s.filled < obj.Size && s.filled < s.next+s.window && s.inflight < maxInflight {
		start := s.filled
		length := min(ReadaheadChunk, obj.Size-start)
		s.filled += length
		s.inflight++
		go func() {
			err := r.c.Fill(r.ctx, obj, fetch, start, length, FillOptions{})
			r.mu.Lock()
			s.inflight--
			r.mu.Unlock()
			if err != nil && r.ctx.Err() == nil {
				// The reader fetches what is missing itself; nothing to undo.
				r.opts.Logger.Debug("readahead failed", "blob", obj.Name, "off", start, "len", length, "err", err)
			}
		}()
	}
}

// track remembers a stream, forgetting the oldest beyond MaxStreams.
// Caller holds mu.
func (r *Reader) track(k streamKey, s *stream) {
	r.streams[k] = s
	r.order = append(r.order, k)
	for len(r.order) > r.opts.MaxStreams {
		delete(r.streams, r.order[0])
		r.order = r.order[1:]
	}
}
