package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
)

// countingStore counts bytes read from the backend.
type countingStore struct {
	blob.Store
	bytes, reads atomic.Int64
	mu           sync.Mutex
	log          []string
}

func (c *countingStore) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	n, err := c.Store.ReadAt(ctx, name, etag, p, off)
	c.bytes.Add(int64(n))
	c.reads.Add(1)
	c.mu.Lock()
	c.log = append(c.log, fmt.Sprintf("%d+%d", off>>20, len(p)>>20))
	c.mu.Unlock()
	return n, err
}

// randomBlob is an in-memory store holding blob "f" of size random bytes.
func randomBlob(t *testing.T, size int) (*memblob.Store, blob.Attrs, []byte) {
	t.Helper()
	mem := memblob.New()
	data := make([]byte, size)
	rand.Read(data)
	a, err := mem.Put(context.Background(), "f", data, blob.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return mem, a, data
}

func newReaderFixture(t *testing.T, size int, readahead int64) (*Reader, *countingStore, blob.Attrs, []byte) {
	t.Helper()
	mem, a, data := randomBlob(t, size)
	cs := &countingStore{Store: mem}
	c, err := Open(context.Background(), Config{Dir: t.TempDir(), DiskBudgetBytes: 256 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := NewReader(c, cs, ReaderOptions{Account: "acct", Container: "c", Identity: "test", ReadaheadBytes: readahead})
	t.Cleanup(r.Close)
	return r, cs, a, data
}

// readSeq reads the blob sequentially through r in reqSize reads and
// checks every byte against data.
func readSeq(t *testing.T, r *Reader, etag blob.ETag, data []byte, reqSize int) {
	t.Helper()
	size := int64(len(data))
	p := make([]byte, reqSize)
	for off := int64(0); off < size; off += int64(len(p)) {
		n, err := r.ReadAtSized(context.Background(), "f", etag, size, p, off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
			t.Fatalf("wrong bytes at %d", off)
		}
	}
}

// A sequential reader gets ahead-of-time fills: by the time it has read
// the file once, the backend has served it in fewer, larger requests than
// the 128 KiB reads the kernel sends, and every byte is correct.
func TestReaderSequentialReadahead(t *testing.T) {
	const size = 24 << 20
	r, cs, a, data := newReaderFixture(t, size, 8<<20)
	readSeq(t, r, a.ETag, data, 128<<10)
	// Readahead fills run in the background; wait for them to settle.
	deadline := time.Now().Add(10 * time.Second)
	for cs.bytes.Load() < size && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := cs.reads.Load(); got >= size/(128<<10) {
		t.Fatalf("%d backend reads for %d kernel reads: readahead did not batch", got, size/(128<<10))
	}
	// Everything was fetched once; not twice.
	if got := cs.bytes.Load(); got > size+8<<20 {
		t.Fatalf("backend served %d bytes for a %d-byte file", got, size)
	}
}

// Random 4 KiB reads never trigger readahead: the backend serves about one
// cache block per read, not windows.
func TestReaderRandomNoReadahead(t *testing.T) {
	const size = 64 << 20
	r, cs, a, data := newReaderFixture(t, size, 16<<20)
	p := make([]byte, 4096)
	offs := []int64{40 << 20, 3 << 20, 60 << 20, 17<<20 + 5, 9 << 20}
	for _, off := range offs {
		if _, err := r.ReadAtSized(context.Background(), "f", a.ETag, size, p, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[off:off+4096]) {
			t.Fatalf("wrong bytes at %d", off)
		}
	}
	time.Sleep(50 * time.Millisecond) // let any (wrong) background fill show up
	if got, max := cs.bytes.Load(), int64(len(offs))*(2<<20); got > max {
		t.Fatalf("random reads pulled %d bytes from the backend, want at most %d", got, max)
	}
}

// The kernel's concurrent readahead delivers a sequential scan slightly
// out of order; it must still be recognised as sequential and batched.
func TestReaderOutOfOrderSequential(t *testing.T) {
	const size = 32 << 20
	r, cs, a, data := newReaderFixture(t, size, 16<<20)
	p := make([]byte, 1<<20)
	for base := int64(0); base < size; base += 4 << 20 {
		// Four 1 MiB reads of each 4 MiB stretch, in a shuffled order.
		for _, i := range []int64{1, 0, 3, 2} {
			off := base + i<<20
			n, err := r.ReadAtSized(context.Background(), "f", a.ETag, size, p, off)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
				t.Fatalf("wrong bytes at %d", off)
			}
		}
	}
	if got, perBlock := cs.reads.Load(), int64(size>>20); got >= perBlock/2 {
		t.Fatalf("%d backend reads for %d blocks read out of order: readahead did not batch %v", got, perBlock, cs.log)
	}
}

// vectorStore is a store with a VectorReader that counts its calls.
type vectorStore struct {
	*countingStore
	vreads atomic.Int64
}

func (v *vectorStore) ReadAtV(ctx context.Context, name string, etag blob.ETag, bufs [][]byte, off int64) (int, error) {
	v.vreads.Add(1)
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	tmp := make([]byte, total)
	n, err := v.countingStore.ReadAt(ctx, name, etag, tmp, off)
	rest := tmp[:n]
	for _, b := range bufs {
		rest = rest[copy(b, rest):]
	}
	return n, err
}

// With a store that reads into several buffers at once, readahead fetches
// runs of blocks straight into the blocks' own buffers (no copy to split
// them), and every byte still arrives right, in RAM and on disk.
func TestReaderVectoredFetch(t *testing.T) {
	const size = 24<<20 + 12345 // a short last block
	mem, a, data := randomBlob(t, size)
	vs := &vectorStore{countingStore: &countingStore{Store: mem}}
	dir := t.TempDir()
	c, err := Open(context.Background(), Config{Dir: dir, DiskBudgetBytes: 256 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := NewReader(c, vs, ReaderOptions{Account: "acct", Container: "c", Identity: "test", ReadaheadBytes: 16 << 20})
	defer r.Close()
	readSeq(t, r, a.ETag, data, 1<<20)
	if vs.vreads.Load() == 0 {
		t.Fatal("no run of blocks was fetched with the store's ReadAtV")
	}
	// The disk tier got the same bytes: a second cache on the directory
	// (no RAM tier, nothing in flight) serves the file without the backend.
	r.Close()
	c.Close()
	c2, err := Open(context.Background(), Config{Dir: dir, DiskBudgetBytes: 256 << 20, BlockSize: 1 << 20, MemBudgetBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	before := vs.reads.Load()
	buf := make([]byte, size)
	obj := Object{Account: "acct", Container: "c", Name: "f", ETag: canonicalETag(a.ETag), Size: size, Credential: "test",
		Validate: func(context.Context) error { return nil }}
	if n, err := c2.ReadAt(context.Background(), obj, StoreFetch(vs, "f", a.ETag), buf, 0); n != size || (err != nil && err != io.EOF) {
		t.Fatalf("read back from disk: %d, %v", n, err)
	}
	if !bytes.Equal(buf, data) {
		t.Fatal("the disk tier holds wrong bytes after vectored fetches")
	}
	if vs.reads.Load() != before {
		t.Errorf("reading back from disk cost %d backend reads", vs.reads.Load()-before)
	}
}

// A second pass over a file (the next epoch) restarts its stream at the
// beginning: with the cache emptied in between, readahead batches the
// second pass like the first instead of leaving it to per-block misses.
func TestReaderSecondPassReadsAhead(t *testing.T) {
	const size = 32 << 20
	r, cs, a, data := newReaderFixture(t, size, 16<<20)
	pass := func() { readSeq(t, r, a.ETag, data, 1<<20) }
	pass()
	r.c.ramWait()
	if err := r.c.Forget(context.Background(), r.object("f", a.ETag, size)); err != nil {
		t.Fatal(err)
	}
	cs.reads.Store(0)
	pass()
	if got, perBlock := cs.reads.Load(), int64(size>>20); got >= perBlock/2 {
		t.Fatalf("second pass: %d backend reads for %d blocks: it was not read ahead", got, perBlock)
	}
}

// A warm pass over a file the disk tier holds (here after a restart, with
// nothing in memory) is read ahead from disk: every byte right, no backend
// request, and each block read from disk once, not once by the readahead
// and again by the reader.
func TestReaderWarmPassPreloadsFromDisk(t *testing.T) {
	const size = 32<<20 + 777
	mem, a, data := randomBlob(t, size)
	cs := &countingStore{Store: mem}
	dir := t.TempDir()
	pass := func(r *Reader) { readSeq(t, r, a.ETag, data, 1<<20) }
	open := func() (*Cache, *Reader) {
		c, err := Open(context.Background(), Config{Dir: dir, DiskBudgetBytes: 256 << 20, BlockSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return c, NewReader(c, cs, ReaderOptions{Account: "acct", Container: "c", Identity: "test", ReadaheadBytes: 16 << 20})
	}
	c, r := open()
	pass(r)
	c.ramWait()
	r.Close()
	c.Close()

	c, r = open() // a restart: the blocks are on disk only
	defer c.Close()
	defer r.Close()
	before := cs.reads.Load()
	pass(r)
	c.ramWait()
	if got := cs.reads.Load() - before; got != 0 {
		t.Errorf("the warm pass made %d backend reads", got)
	}
	if got := c.Stats().DiskReadBytes; got > size {
		t.Errorf("the warm pass read %d bytes from disk for a %d-byte file: blocks were read twice", got, size)
	}
}

// A file's first small read (open, read a header) fetches its own block
// and nothing else, so nothing competes with it for the time to first
// byte; a second read that continues starts the readahead.
func TestReaderFirstSmallReadFetchesOnlyItsBlock(t *testing.T) {
	const size = 24 << 20
	r, cs, a, data := newReaderFixture(t, size, 8<<20)
	ctx := context.Background()
	p := make([]byte, 4096)
	if _, err := r.ReadAtSized(ctx, "f", a.ETag, size, p, 0); err != nil || !bytes.Equal(p, data[:4096]) {
		t.Fatalf("first read: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // readahead, if started, has landed
	if got, bytes := cs.reads.Load(), cs.bytes.Load(); got != 1 || bytes != 1<<20 {
		t.Fatalf("first 4 KiB read: %d backend reads of %d bytes, want 1 of its 1 MiB block", got, bytes)
	}
	q := make([]byte, 128<<10)
	if _, err := r.ReadAtSized(ctx, "f", a.ETag, size, q, 4096); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for cs.bytes.Load() <= 1<<20 {
		if time.Now().After(deadline) {
			t.Fatal("a continuing read started no readahead")
		}
		time.Sleep(time.Millisecond)
	}
}

// A shard-sized file whose first read is a large one at its start (the
// kernel's readahead of a buffered read) is fetched whole at once, in
// parallel chunks; a larger file keeps the ramp-up window.
func TestReaderFetchesAShardWholeFromItsFirstLargeRead(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		size      int
		off       int64 // of the first read: the kernel's first READs arrive in any order
		wantBytes int64 // fetched after the first read and its readahead
		wantReads int64 // backend requests
	}{
		{16 << 20, 0, 16 << 20, 2},       // everything, in two 8 MiB chunks the read joined
		{16 << 20, 2 << 20, 16 << 20, 2}, // the same when a later READ comes first
		{96 << 20, 0, 1<<20 + 8<<20, 2},  // over wholeFileWindow: the read's block and one chunk
	} {
		r, cs, a, data := newReaderFixture(t, c.size, 128<<20)
		p := make([]byte, 1<<20)
		if _, err := r.ReadAtSized(ctx, "f", a.ETag, int64(c.size), p, c.off); err != nil || !bytes.Equal(p, data[c.off:c.off+1<<20]) {
			t.Fatalf("size %d: first read: %v", c.size, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for cs.bytes.Load() < c.wantBytes && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // anything more would have started by now
		if got, reads := cs.bytes.Load(), cs.reads.Load(); got != c.wantBytes || reads != c.wantReads {
			t.Errorf("size %d MiB: %d MiB in %d requests after the first 1 MiB read, want %d MiB in %d", c.size>>20, got>>20, reads, c.wantBytes>>20, c.wantReads)
		}
	}
}

// OpenBacking with FetchAtOpen fetches an object the cache does not hold
// whole, in ReadaheadChunk-sized reads, and returns its cache file once
// they are stored; an object over the limit, or with the option off, is
// refused without a read; a cached one costs no read.
func TestReaderOpenBackingFetchesWholeAtOpen(t *testing.T) {
	ctx := context.Background()
	const size = 2*ReadaheadChunk + 123 // three chunks
	mem, a, data := randomBlob(t, size)
	cs := &countingStore{Store: mem}
	c, err := Open(ctx, Config{Dir: t.TempDir(), DiskBudgetBytes: 256 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reader := func(fetchAtOpen int64) *Reader {
		// A key prefix, as a mount of a subdirectory has: the cache key
		// is prefixed, the store name is not.
		r := NewReader(c, cs, ReaderOptions{Account: "acct", Container: "c", KeyPrefix: "sub/", Identity: "test",
			ReadaheadBytes: 16 << 20, FetchAtOpen: fetchAtOpen})
		t.Cleanup(r.Close)
		return r
	}

	for _, limit := range []int64{0, size - 1} {
		if _, err := reader(limit).OpenBacking(ctx, "f", a.ETag, size); !errors.Is(err, ErrNoBacking) {
			t.Fatalf("FetchAtOpen %d: %v, want ErrNoBacking", limit, err)
		}
		if n := cs.reads.Load(); n != 0 {
			t.Fatalf("FetchAtOpen %d: %d store reads, want none", limit, n)
		}
	}
	// A file one FUSE read can deliver is not worth a backing.
	small, err := mem.Put(ctx, "small", data[:fetchAtOpenMin-1], blob.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader(64<<20).OpenBacking(ctx, "small", small.ETag, fetchAtOpenMin-1); !errors.Is(err, ErrNoBacking) {
		t.Fatalf("file under fetchAtOpenMin: %v, want ErrNoBacking", err)
	}
	if n := cs.reads.Load(); n != 0 {
		t.Fatalf("file under fetchAtOpenMin: %d store reads, want none", n)
	}

	r := reader(64 << 20)
	b, err := r.OpenBacking(ctx, "f", a.ETag, size)
	if err != nil {
		t.Fatalf("cold object: %v, want its cache file", err)
	}
	got, err := io.ReadAll(io.NewSectionReader(b.File(), 0, size+1))
	b.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("cache file: %d bytes, %v; want the blob's %d", len(got), err, size)
	}
	if n := cs.reads.Load(); n != 3 {
		t.Errorf("%d store reads (%v), want 3 of up to ReadaheadChunk", n, cs.log)
	}
	b, err = r.OpenBacking(ctx, "f", a.ETag, size)
	if err != nil {
		t.Fatalf("cached object: %v", err)
	}
	b.Close()
	if n := cs.reads.Load(); n != 3 {
		t.Errorf("cached object: %d store reads in all, want no more than the 3 before", n)
	}
}
