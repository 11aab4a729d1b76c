package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
	"github.com/blobfs/blobfs/internal/testenv"
)

// tierConfigs are the tier combinations every read test runs on.
func tierConfigs(t *testing.T) map[string]Config {
	return map[string]Config{
		"ram":      {MemBudgetBytes: 64 << 20},
		"disk":     {Dir: t.TempDir(), DiskBudgetBytes: 256 << 20, MemBudgetBytes: -1},
		"ram+disk": {Dir: t.TempDir(), DiskBudgetBytes: 256 << 20, MemBudgetBytes: 64 << 20},
	}
}

func TestReadAtRanges(t *testing.T) {
	size := int64(5*testBS + 1234) // partial last block
	cases := []struct {
		name    string
		off     int64
		n       int
		wantN   int
		wantEOF bool
	}{
		{"first byte", 0, 1, 1, false},
		{"within block", 100, 1000, 1000, false},
		{"one whole block", testBS, testBS, testBS, false},
		{"spans two blocks", testBS - 10, 20, 20, false},
		{"spans all blocks", 1, int(size) - 2, int(size) - 2, false},
		{"partial last block", 5 * testBS, 1234, 1234, false},
		{"ends exactly at EOF", size - 10, 10, 10, false},
		{"past EOF", size - 10, 100, 10, true},
		{"whole object and more", 0, int(size) + 1, int(size), true},
		{"at EOF", size, 10, 0, true},
		{"beyond EOF", size + 100, 10, 0, true},
		{"empty buffer", 10, 0, 0, false},
	}
	for tier, cfg := range tierConfigs(t) {
		t.Run(tier, func(t *testing.T) {
			c := openCache(t, cfg)
			src := newSource(size, 7)
			obj := object("ranges", size)
			for pass := range 2 { // cold, then warm
				for _, tc := range cases {
					p := make([]byte, tc.n)
					n, err := c.ReadAt(context.Background(), obj, src.fetch, p, tc.off)
					if n != tc.wantN || errors.Is(err, io.EOF) != tc.wantEOF || (err != nil && !errors.Is(err, io.EOF)) {
						t.Fatalf("pass %d %s: ReadAt = %d, %v; want %d, EOF=%v", pass, tc.name, n, err, tc.wantN, tc.wantEOF)
					}
					if !bytes.Equal(p[:n], src.want(tc.off, int64(n))) {
						t.Fatalf("pass %d %s: wrong bytes", pass, tc.name)
					}
				}
				c.ramWait()
			}
			if got := src.bytes.Load(); got != size {
				t.Errorf("fetched %d bytes for a %d-byte object read twice; want each byte once", got, size)
			}
		})
	}
}

func TestReadAtArgs(t *testing.T) {
	c := openCache(t, Config{MemBudgetBytes: 1 << 20})
	src := newSource(100, 1)
	if _, err := c.ReadAt(context.Background(), object("x", 100), src.fetch, make([]byte, 1), -1); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("negative offset: %v, want fs.ErrInvalid", err)
	}
	if _, err := c.ReadAt(context.Background(), object("x", 100), nil, make([]byte, 1), 0); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("nil fetch: %v, want fs.ErrInvalid", err)
	}
	n, err := c.ReadAt(context.Background(), object("empty", 0), src.fetch, make([]byte, 1), 0)
	if n != 0 || err != io.EOF {
		t.Errorf("empty object: %d, %v", n, err)
	}
	c.Close()
	if _, err := c.ReadAt(context.Background(), object("x", 100), src.fetch, make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

func TestHitAndMiss(t *testing.T) {
	for tier, cfg := range tierConfigs(t) {
		t.Run(tier, func(t *testing.T) {
			c := openCache(t, cfg)
			size := int64(4 * testBS)
			src := newSource(size, 3)
			obj := object("hitmiss", size)
			readAll(t, c, obj, src, testBS)
			if got := src.calls.Load(); got != 4 {
				t.Errorf("cold read of 4 blocks in block-sized requests: %d fetches, want 4", got)
			}
			c.ramWait()
			readAll(t, c, obj, src, testBS)
			if got := src.calls.Load(); got != 4 {
				t.Errorf("warm read fetched again: %d fetches", got)
			}
			s := c.Stats()
			if s.Misses != 4 || s.RAMHits+s.DiskHits != 4 {
				t.Errorf("stats: %d misses, %d+%d hits; want 4, 4", s.Misses, s.RAMHits, s.DiskHits)
			}
		})
	}
}

func TestCoalescedFetch(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20, MaxFetchBytes: 4 * testBS})
	size := int64(10 * testBS)
	src := newSource(size, 4)
	readAll(t, c, object("big", size), src, int(size))
	// 10 blocks in runs of at most 4: 4+4+2.
	if got := src.calls.Load(); got != 3 {
		t.Errorf("one 10-block read: %d fetches, want 3", got)
	}
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	readers := testenv.Pick(16, 64)
	for tier, cfg := range tierConfigs(t) {
		t.Run(tier, func(t *testing.T) {
			c := openCache(t, cfg)
			size := int64(2 * testBS)
			src := newSource(size, 5)
			gate := make(chan struct{})
			src.setGate(gate)
			obj := object("shared", size)
			var wg sync.WaitGroup
			errs := make(chan error, readers)
			for i := range readers {
				wg.Go(func() {
					p := make([]byte, 100)
					off := int64(i * 37 % testBS)
					n, err := c.ReadAt(context.Background(), obj, src.fetch, p, off)
					if err == nil && !bytes.Equal(p[:n], src.want(off, int64(n))) {
						err = errors.New("wrong bytes")
					}
					errs <- err
				})
			}
			eventually(t, "all readers to wait on the fetch", func() bool { return c.Stats().Misses == uint64(readers) })
			close(gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := src.calls.Load(); got != 1 {
				t.Errorf("%d concurrent misses of one block: %d fetches, want 1", readers, got)
			}
		})
	}
}

func TestCancelledReaderDoesNotCancelSharedFetch(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20})
	size := int64(testBS)
	src := newSource(size, 6)
	src.started = make(chan struct{}, 10)
	gate := make(chan struct{})
	src.setGate(gate)
	obj := object("cancel", size)

	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(ctx1, obj, src.fetch, make([]byte, 10), 0)
		first <- err
	}()
	<-src.started // the first reader's fetch is running
	second := make(chan error, 1)
	p2 := make([]byte, 10)
	go func() {
		_, err := c.ReadAt(context.Background(), obj, src.fetch, p2, 5)
		second <- err
	}()
	eventually(t, "the second reader to join", func() bool { return c.Stats().Misses == 2 })
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v, want context.Canceled", err)
	}
	close(gate)
	if err := <-second; err != nil {
		t.Fatalf("second reader: %v", err)
	}
	if !bytes.Equal(p2, src.want(5, 10)) {
		t.Fatal("second reader got wrong bytes")
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	if n := src.cancelledFetches.Load(); n != 0 {
		t.Errorf("the shared fetch saw its context cancelled")
	}
	// The fetch completed into the cache although its starter gave up.
	c.ramWait()
	readAll(t, c, obj, src, 10)
	if n := src.calls.Load(); n != 1 {
		t.Errorf("after the shared fetch completed: %d fetches, want 1", n)
	}
}

func TestCloseCancelsFetches(t *testing.T) {
	c := openCache(t, Config{MemBudgetBytes: 1 << 20})
	src := newSource(testBS, 1)
	src.setGate(make(chan struct{})) // never opens
	src.started = make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(context.Background(), object("x", testBS), src.fetch, make([]byte, 1), 0)
		done <- err
	}()
	<-src.started
	c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("reader of a fetch cut by Close: %v, want ErrClosed", err)
	}
}

func TestFetchErrors(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20})
	src := newSource(testBS, 1)
	src.setErr(fmt.Errorf("read: %w", blob.ErrPermission))
	obj := object("denied", testBS)
	if _, err := c.ReadAt(context.Background(), obj, src.fetch, make([]byte, 10), 0); !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("fetch error: %v, want ErrPermission", err)
	}
	// Not cached: the next read fetches again and succeeds.
	src.setErr(nil)
	readAll(t, c, obj, src, 10)

	// The backend has fewer bytes than the Object says: the Object is stale.
	short := newSource(testBS/2, 2)
	if _, err := c.ReadAt(context.Background(), object("short", testBS), short.fetch, make([]byte, testBS), 0); !errors.Is(err, blob.ErrStale) {
		t.Fatalf("short backend: %v, want ErrStale", err)
	}

	panicky := func(context.Context, []byte, int64) (int, error) { panic("boom") }
	if _, err := c.ReadAt(context.Background(), object("panic", 10), panicky, make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panicking fetch: %v", err)
	}
}

func TestRAMHitWithoutDiskRead(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20, MemBudgetBytes: 16 << 20})
	size := int64(3 * testBS)
	src := newSource(size, 8)
	obj := object("ram", size)
	readAll(t, c, obj, src, testBS)
	c.ramWait()
	before := c.Stats()
	readAll(t, c, obj, src, testBS)
	after := c.Stats()
	if after.DiskReadBytes != before.DiskReadBytes {
		t.Errorf("warm read touched the disk: %d bytes", after.DiskReadBytes-before.DiskReadBytes)
	}
	if after.RAMHits-before.RAMHits != 3 || src.calls.Load() != 3 {
		t.Errorf("want 3 RAM hits and no new fetch; got %d hits, %d fetches", after.RAMHits-before.RAMHits, src.calls.Load())
	}
}

func TestIdentityGuard(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20, MemBudgetBytes: 16 << 20})
	size := int64(2 * testBS)
	src := newSource(size, 9)
	owner := object("secret", size)
	owner.Credential, owner.Validate = "owner", nil
	readAll(t, c, owner, src, testBS) // cached by the owner's fetches
	c.ramWait()

	// Another identity whose HEAD is refused gets nothing from the cache.
	intruder := owner
	intruder.Credential = "intruder"
	intruder.Validate = func(context.Context) error { return fmt.Errorf("HEAD: %w", blob.ErrPermission) }
	p := make([]byte, 10)
	n, err := c.ReadAt(context.Background(), intruder, src.fetch, p, 0)
	if !errors.Is(err, blob.ErrPermission) || n != 0 || !bytes.Equal(p, make([]byte, 10)) {
		t.Fatalf("refused identity: n=%d err=%v", n, err)
	}

	// Without Validate, a 1-byte fetch with the identity's own FetchFunc decides.
	denied := newSource(size, 9)
	denied.setErr(blob.ErrPermission)
	intruder.Validate = nil
	if _, err := c.ReadAt(context.Background(), intruder, denied.fetch, p, 0); !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("identity whose fetch is refused: %v", err)
	}

	// An allowed identity validates once, then hits.
	var validations int
	friend := owner
	friend.Credential = "friend"
	friend.Validate = func(context.Context) error { validations++; return nil }
	calls := src.calls.Load()
	readAll(t, c, friend, src, 10)
	readAll(t, c, friend, src, testBS)
	if validations != 1 || src.calls.Load() != calls {
		t.Errorf("allowed identity: %d validations (want 1), %d new fetches (want 0)", validations, src.calls.Load()-calls)
	}

	// A reader joining another identity's in-flight fetch validates too.
	obj2 := object("secret2", testBS)
	obj2.Credential = "owner"
	src2 := newSource(testBS, 10)
	gate := make(chan struct{})
	src2.setGate(gate)
	go c.ReadAt(context.Background(), obj2, src2.fetch, make([]byte, 1), 0)
	eventually(t, "the owner's fetch", func() bool { return src2.calls.Load() == 1 })
	joiner := obj2
	joiner.Credential = "joiner"
	joiner.Validate = func(context.Context) error { return blob.ErrPermission }
	res := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(context.Background(), joiner, src2.fetch, make([]byte, 1), 0)
		res <- err
	}()
	close(gate)
	if err := <-res; !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("joiner without access: %v", err)
	}
}

func TestForgetAndStale(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20})
	base := c.Stats().DiskUsed
	size := int64(3 * testBS)
	v1, v2 := object("model.bin", size), object("model.bin", size)
	v2.ETag = `"0x2"`
	s1, s2 := newSource(size, 1), newSource(size, 2)
	readAll(t, c, v1, s1, testBS)
	readAll(t, c, v2, s2, testBS)
	other := object("other.bin", size)
	readAll(t, c, other, s1, testBS)
	c.ramWait() // Forget does not wait for blocks still being stored

	n, err := c.ForgetStale(context.Background(), v2)
	if err != nil || n != 1 {
		t.Fatalf("ForgetStale = %d, %v; want 1", n, err)
	}
	if st, _ := c.Status(context.Background(), v1); st.CachedBlocks != 0 {
		t.Errorf("v1 still has %d blocks", st.CachedBlocks)
	}
	if st, _ := c.Status(context.Background(), v2); !st.Complete() || st.Percent() != 100 {
		t.Errorf("v2 status %+v, want complete", st)
	}
	if err := c.Forget(context.Background(), v2); err != nil {
		t.Fatal(err)
	}
	if err := c.Forget(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(context.Background(), v2); st.CachedBlocks != 0 {
		t.Errorf("v2 still has %d blocks", st.CachedBlocks)
	}
	checkLedger(t, c)
	// Only the fan-out directories remain charged.
	if used := c.Stats().DiskUsed; used-base > 3*pageSize {
		t.Errorf("after forgetting everything %d bytes are in use, %d at start", used, base)
	}
	// Forgotten blocks are fetched again.
	calls := s2.calls.Load()
	readAll(t, c, v2, s2, testBS)
	if s2.calls.Load() == calls {
		t.Error("a forgotten object was served without a fetch")
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"dir with default budget", Config{Dir: "/x"}, true},
		{"block not power of two", Config{BlockSize: 3 << 20}, false},
		{"block too small", Config{BlockSize: 1024}, false},
		{"block too big", Config{BlockSize: 128 << 20}, false},
		{"fetch smaller than block", Config{BlockSize: 1 << 20, MaxFetchBytes: 512 << 10}, false},
		{"fetch not a multiple", Config{BlockSize: 1 << 20, MaxFetchBytes: 3<<20 + 1}, false},
		{"both budgets", Config{Dir: "/x", DiskBudgetBytes: 1, DiskBudgetPercent: 1}, false},
		{"percent over 100", Config{Dir: "/x", DiskBudgetPercent: 101}, false},
		{"negative budget", Config{Dir: "/x", DiskBudgetBytes: -1}, false},
		{"budget without dir", Config{DiskBudgetBytes: 1 << 30}, false},
		{"negative inflight", Config{MaxInflightFetches: -1}, false},
		{"RAM off", Config{MemBudgetBytes: -1}, true},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestDiskBudgetPercent(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetPercent: 1})
	if b := c.Stats().DiskBudget; b <= 0 {
		t.Errorf("1%% of the filesystem resolved to %d bytes", b)
	}
}

func TestBlockSizeChange(t *testing.T) {
	dir := t.TempDir()
	a := openCache(t, Config{Dir: dir, DiskBudgetBytes: 64 << 20, BlockSize: testBS})
	src := newSource(2*testBS, 1)
	readAll(t, a, object("x", 2*testBS), src, testBS)
	// In use by a: a different block size is refused.
	if _, err := Open(context.Background(), Config{Dir: dir, DiskBudgetBytes: 64 << 20, BlockSize: 2 * testBS, Logger: quietLogger()}); !errors.Is(err, ErrBlockSizeMismatch) {
		t.Fatalf("second user with another block size: %v", err)
	}
	a.Close()
	// Sole user: the directory is wiped and re-created.
	b := openCache(t, Config{Dir: dir, DiskBudgetBytes: 64 << 20, BlockSize: 2 * testBS})
	if st, _ := b.Status(context.Background(), object("x", 2*testBS)); st.CachedBlocks != 0 {
		t.Errorf("old blocks survived a block size change")
	}
	readAll(t, b, object("x", 2*testBS), src, testBS)
	checkLedger(t, b)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20, MemBudgetBytes: -1, Registerer: reg})
	src := newSource(2*testBS, 1)
	obj := object("m", 2*testBS)
	readAll(t, c, obj, src, testBS)
	c.ramWait()
	readAll(t, c, obj, src, testBS)
	if got := testutil.ToFloat64(c.met.misses); got != 2 {
		t.Errorf("misses_total = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.met.hits.WithLabelValues(tierDisk)); got != 2 {
		t.Errorf(`hits_total{tier="disk"} = %v, want 2`, got)
	}
	if got := testutil.ToFloat64(c.met.fetchedBytes); got != float64(2*testBS) {
		t.Errorf("fetched_bytes_total = %v", got)
	}
	n, err := testutil.GatherAndCount(reg, "blobfs_cache_disk_used_bytes", "blobfs_cache_fetch_seconds")
	if err != nil || n != 2 {
		t.Errorf("gather: %d series, %v", n, err)
	}
	// A second Cache on the same registerer is refused, not silently unobserved.
	if _, err := Open(context.Background(), Config{Registerer: reg}); err == nil {
		t.Error("duplicate registration accepted")
	}
}

func TestStoreAdapters(t *testing.T) {
	ctx := context.Background()
	st := memblob.New()
	data := bytes.Repeat([]byte("blobfs"), 50000)
	a, err := st.Put(ctx, "d/file", data, blob.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20})
	obj := Object{Account: "a", Container: "c", Name: "d/file", ETag: a.ETag, Size: a.Size, Credential: "id",
		Validate: StoreValidate(st, "d/file", a.ETag)}
	got := make([]byte, len(data))
	if n, err := c.ReadAt(ctx, obj, StoreFetch(st, "d/file", a.ETag), got, 0); n != len(data) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("wrong bytes through StoreFetch")
	}
	// The blob changes: the old version's fetch and validation fail with ErrStale.
	if _, err := st.Put(ctx, "d/file", []byte("new"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := obj.Validate(ctx); !errors.Is(err, blob.ErrStale) {
		t.Errorf("StoreValidate after a change: %v", err)
	}
	if _, err := StoreFetch(st, "d/file", a.ETag)(ctx, got[:10], 0); !errors.Is(err, blob.ErrStale) {
		t.Errorf("StoreFetch after a change: %v", err)
	}
}

// A fetch proves access for the identity it ran for, whoever started it: a
// reader of that identity hitting blocks that a readahead fill brought in
// is served without a Validate (a HEAD per file on a cold scan otherwise),
// while a reader of another identity still validates.
func TestFillProvesAccessForItsIdentity(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20, MemBudgetBytes: 16 << 20})
	size := int64(2 * testBS)
	src := newSource(size, 11)
	var validations atomic.Int64
	mount := object("shard", size)
	mount.Credential = "mount"
	mount.Validate = func(context.Context) error { validations.Add(1); return nil }
	// The reader joins the fill's fetch while it runs, as a scan's reader
	// catches up with its readahead.
	gate := make(chan struct{})
	src.setGate(gate)
	h := c.StartFill(context.Background(), mount, src.fetch, 0, size)
	eventually(t, "the fill's fetch", func() bool { return src.calls.Load() == 1 })
	res := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(context.Background(), mount, src.fetch, make([]byte, size), 0)
		res <- err
	}()
	eventually(t, "the reader joining the fetch", func() bool { return c.Stats().Misses >= 2*2 })
	close(gate)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if err := h.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := validations.Load(); n != 0 {
		t.Errorf("same identity as the fill: %d validations, want 0", n)
	}
	other := mount
	other.Credential = "other"
	readAll(t, c, other, src, testBS)
	if n := validations.Load(); n != 1 {
		t.Errorf("another identity: %d validations, want 1", n)
	}
	if got := src.calls.Load(); got != 1 {
		t.Errorf("%d fetches, want the fill's 1", got)
	}
}
