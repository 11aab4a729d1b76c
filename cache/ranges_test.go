package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// The bar, at the Reader: 2 MiB of cold 4 KiB random reads over a
// large file pull at most 8 MiB from the backend, every byte is right,
// and re-reading the same offsets costs nothing.
func TestReaderRandom4KPullsLittle(t *testing.T) {
	const size = 256 << 20
	r, cs, a, data := newReaderFixture(t, size, 64<<20)
	rng := rand.New(rand.NewPCG(11, 12))
	offs := make([]int64, (2<<20)/4096)
	for i := range offs {
		offs[i] = 4096 * (1 + rng.Int64N(size/4096-1)) // page-aligned, as the kernel asks
	}
	p := make([]byte, 4096)
	read := func() {
		for _, off := range offs {
			n, err := r.ReadAtSized(context.Background(), "f", a.ETag, size, p, off)
			if err != nil || n != len(p) {
				t.Fatalf("read at %d: n=%d err=%v", off, n, err)
			}
			if !bytes.Equal(p, data[off:off+4096]) {
				t.Fatalf("wrong bytes at %d", off)
			}
		}
	}
	read()
	r.c.ramWait()
	time.Sleep(20 * time.Millisecond) // a (wrong) background fill would show up here
	if got := cs.bytes.Load(); got > 8<<20 {
		t.Fatalf("2 MiB of random 4 KiB reads pulled %d bytes from the backend, want at most 8 MiB", got)
	}
	t.Logf("2 MiB of cold random 4 KiB reads: %d backend bytes in %d requests", cs.bytes.Load(), cs.reads.Load())
	before := cs.reads.Load()
	read()
	if got := cs.reads.Load() - before; got != 0 {
		t.Fatalf("re-reading the same 4 KiB ranges made %d backend requests, want 0 (RAM range units)", got)
	}
	if st := r.c.Stats(); st.RangeHits < uint64(len(offs)) {
		t.Errorf("RangeHits = %d after re-reading %d ranges", st.RangeHits, len(offs))
	}
}

// A reader that starts mid-file with small reads is random at first and
// becomes sequential once it keeps going: then readahead batches its
// reads into few large GETs.
func TestReaderRandomThenSequential(t *testing.T) {
	const size = 64 << 20
	r, cs, a, data := newReaderFixture(t, size, 16<<20)
	p := make([]byte, 128<<10)
	start := int64(20 << 20)
	var reads int
	for off := start; off < start+24<<20; off += int64(len(p)) {
		n, err := r.ReadAtSized(context.Background(), "f", a.ETag, size, p, off)
		if err != nil || n != len(p) {
			t.Fatalf("read at %d: n=%d err=%v", off, n, err)
		}
		if !bytes.Equal(p, data[off:off+int64(n)]) {
			t.Fatalf("wrong bytes at %d", off)
		}
		reads++
	}
	if got := cs.reads.Load(); got >= int64(reads)/4 {
		t.Fatalf("%d backend reads for %d sequential 128 KiB reads: readahead never started", got, reads)
	}
}

// A random read of a block that is already cached is served from the
// block, without a request; a random read never leaves a unit on disk.
func TestReadRandomAtUsesCachedBlocks(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20})
	src := newSource(8*testBS, 3)
	obj := object("blocks", src.size)
	if err := c.Fill(context.Background(), obj, src.fetch, 0, 2*testBS, FillOptions{}); err != nil {
		t.Fatal(err)
	}
	calls := src.calls.Load()
	p := make([]byte, 4096)
	for _, off := range []int64{5, testBS - 100, 2*testBS + 7, 5*testBS + 4096} {
		if _, err := c.ReadRandomAt(context.Background(), obj, src.fetch, p, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, src.want(off, int64(len(p)))) {
			t.Fatalf("wrong bytes at %d", off)
		}
	}
	// Two reads inside blocks 0-1 were hits; the one straddling blocks 0
	// and 1 too; the last two fetched units.
	if got := src.calls.Load() - calls; got != 2 {
		t.Fatalf("%d fetches, want 2 (one per uncached read)", got)
	}
	if got := src.bytes.Load(); got > 2*testBS+2*8192 {
		t.Fatalf("fetched %d bytes: random reads pulled whole blocks", got)
	}
	st, err := c.Status(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedBlocks != 2 {
		t.Fatalf("%d blocks on disk, want the 2 filled ones (units stay in RAM)", st.CachedBlocks)
	}
}

// Concurrent random readers of one range share one fetch, a reader's
// cancellation does not fail the others, and a failed fetch is not cached.
func TestReadRandomAtSharesFetches(t *testing.T) {
	c := openCache(t, Config{})
	src := newSource(4*testBS, 4)
	obj := object("shared", src.size)
	gate := make(chan struct{})
	src.setGate(gate)
	src.started = make(chan struct{}, 16)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		rctx := context.Background()
		if i == 0 {
			rctx = ctx
		}
		wg.Go(func() {
			p := make([]byte, 8192)
			_, errs[i] = c.ReadRandomAt(rctx, obj, src.fetch, p, testBS+4096)
			if errs[i] == nil && !bytes.Equal(p, src.want(testBS+4096, 8192)) {
				errs[i] = errors.New("wrong bytes")
			}
		})
	}
	<-src.started
	eventually(t, "all readers to join the fetch", func() bool {
		c.fmu.Lock()
		defer c.fmu.Unlock()
		return len(c.unitFlights) == 2 // the 8 KiB read spans two 4 KiB units
	})
	cancel()
	time.Sleep(10 * time.Millisecond)
	close(gate)
	wg.Wait()
	if !errors.Is(errs[0], context.Canceled) && errs[0] != nil {
		t.Errorf("cancelled reader: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("reader %d: %v", i+1, err)
		}
	}
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("%d fetches for one range read by 4 readers, want 1", got)
	}

	// A failing fetch is reported and not remembered.
	src.setErr(errInjected)
	p := make([]byte, 4096)
	if _, err := c.ReadRandomAt(context.Background(), obj, src.fetch, p, 3*testBS); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("read with a failing backend: %v, want ErrUnavailable", err)
	}
	src.setErr(nil)
	if _, err := c.ReadRandomAt(context.Background(), obj, src.fetch, p, 3*testBS); err != nil {
		t.Fatalf("read after the backend recovered: %v", err)
	}
}

// Range units never cross versions: a new ETag misses, and a fetch that
// finds the blob changed fails with ErrStale instead of returning bytes.
func TestReadRandomAtVersioned(t *testing.T) {
	c := openCache(t, Config{})
	v1 := newSource(testBS, 5)
	obj1 := object("v", v1.size)
	p := make([]byte, 4096)
	if _, err := c.ReadRandomAt(context.Background(), obj1, v1.fetch, p, 8192); err != nil {
		t.Fatal(err)
	}
	c.ramWait()
	v2 := newSource(testBS, 6)
	obj2 := obj1
	obj2.ETag = `"0x2"`
	if _, err := c.ReadRandomAt(context.Background(), obj2, v2.fetch, p, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, v2.want(8192, 4096)) {
		t.Fatal("a new version was served the old version's range")
	}
	stale := func(context.Context, []byte, int64) (int, error) { return 0, blob.ErrStale }
	obj3 := obj1
	obj3.ETag = `"0x3"`
	if _, err := c.ReadRandomAt(context.Background(), obj3, stale, p, 8192); !errors.Is(err, blob.ErrStale) {
		t.Fatalf("read of a changed blob: %v, want ErrStale", err)
	}
	// EOF semantics as ReadAt.
	n, err := c.ReadRandomAt(context.Background(), obj2, v2.fetch, make([]byte, 8192), testBS-4096)
	if n != 4096 || !errors.Is(err, io.EOF) {
		t.Fatalf("read across the end: n=%d err=%v, want 4096, EOF", n, err)
	}
}
