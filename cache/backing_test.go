package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// readBacking reads the whole backing file and compares it with src.
func readBacking(t *testing.T, b *Backing, src *source) {
	t.Helper()
	got, err := io.ReadAll(io.NewSectionReader(b.File(), 0, src.size+1))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != src.size || !bytes.Equal(got, src.want(0, src.size)) {
		t.Fatalf("backing file: %d bytes, want the blob's %d (equal: %v)", len(got), src.size, bytes.Equal(got, src.want(0, min(src.size, int64(len(got))))))
	}
}

func TestOpenBackingOnlyWhenWholeAndVerified(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, diskOnly(t.TempDir(), 64*testBS))
	size := int64(5*testBS + 123)
	obj, src := object("shard", size), newSource(size, 7)

	// Nothing cached, then a part: refused.
	if _, err := c.OpenBacking(ctx, obj); !errors.Is(err, ErrNoBacking) {
		t.Fatalf("empty cache: %v, want ErrNoBacking", err)
	}
	buf := make([]byte, testBS)
	if _, err := c.ReadAt(ctx, obj, src.fetch, buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenBacking(ctx, obj); !errors.Is(err, ErrNoBacking) {
		t.Fatalf("one block of six: %v, want ErrNoBacking", err)
	}
	readAll(t, c, obj, src, testBS)
	waitComplete(t, c, obj)
	b, err := c.OpenBacking(ctx, obj)
	if err != nil {
		t.Fatalf("whole object: %v", err)
	}
	defer b.Close()
	readBacking(t, b, src)
	if got := c.Stats().Backings; got != 1 {
		t.Errorf("Stats.Backings = %d, want 1", got)
	}

	// Another identity must show it may read the blob first.
	denied := obj
	denied.Credential = "someone-else"
	denied.Validate = func(context.Context) error { return errors.New("403") }
	if _, err := c.OpenBacking(ctx, denied); err == nil || errors.Is(err, ErrNoBacking) {
		t.Fatalf("identity without access: %v, want the validation error", err)
	}
}

func TestOpenBackingNeedsVerificationAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	size := int64(4 * testBS)
	obj, src := object("shard", size), newSource(size, 9)
	first := openCache(t, diskOnly(dir, 64*testBS))
	readAll(t, first, obj, src, testBS)
	first.Close()

	// A new process (Cache) over the warm directory has verified nothing:
	// it serves the object through itself once, checking every block, and
	// hands it out from then on.
	c := openCache(t, diskOnly(dir, 64*testBS))
	if _, err := c.OpenBacking(ctx, obj); !errors.Is(err, ErrNoBacking) {
		t.Fatalf("unverified after a restart: %v, want ErrNoBacking", err)
	}
	calls := src.calls.Load()
	readAll(t, c, obj, src, testBS)
	if src.calls.Load() != calls {
		t.Fatal("a warm read went to the backend")
	}
	b, err := c.OpenBacking(ctx, obj)
	if err != nil {
		t.Fatalf("after a verifying read: %v", err)
	}
	readBacking(t, b, src)
	b.Close()

	// A block that fails verification is dropped, so the object is no
	// longer whole: refused until it is fetched again.
	c2dir := t.TempDir()
	c2 := openCache(t, diskOnly(c2dir, 64*testBS))
	readAll(t, c2, obj, src, testBS)
	data := c2.disk.dataPath(keyOf(obj))
	c2.Close()
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xde, 0xad}, testBS+5)
	f.Close()
	c3 := openCache(t, diskOnly(c2dir, 64*testBS))
	readAll(t, c3, obj, src, testBS) // refetches the corrupt block
	if got := c3.Stats().ChecksumFailures; got != 1 {
		t.Fatalf("checksum failures = %d, want 1", got)
	}
	b, err = c3.OpenBacking(ctx, obj)
	if err != nil {
		t.Fatalf("after the refetch: %v", err)
	}
	readBacking(t, b, src)
	b.Close()
}

// twoProcessesOneObject opens two caches (two processes) on one directory
// with a budget of 16 blocks, and stores a 6-block object whole through
// the first.
func twoProcessesOneObject(t *testing.T, name string, seed uint64) (c, other *Cache, obj Object, src *source) {
	t.Helper()
	dir := t.TempDir()
	budget := int64(16*testBS + 32*pageSize)
	c = openCache(t, diskOnly(dir, budget))
	other = openCache(t, diskOnly(dir, budget))
	size := int64(6 * testBS)
	obj, src = object(name, size), newSource(size, seed)
	readAll(t, c, obj, src, testBS)
	waitComplete(t, c, obj)
	return c, other, obj, src
}

func TestBackingLeaseKeepsBlocksThroughEvictionStorm(t *testing.T) {
	ctx := context.Background()
	// Eviction in the other process must see the lease too.
	c, other, obj, src := twoProcessesOneObject(t, "leased", 3)
	b, err := c.OpenBacking(ctx, obj)
	if err != nil {
		t.Fatal(err)
	}
	for i, cc := range []*Cache{c, other, c} {
		scanSize := int64(3 * 16 * testBS)
		readAll(t, cc, object("scan"+string(rune('a'+i)), scanSize), newSource(scanSize, uint64(10+i)), testBS)
	}
	readBacking(t, b, src)
	st, err := c.Status(ctx, obj)
	if err != nil || !st.Complete() {
		t.Fatalf("leased object after three scans of 3× the budget: %+v, %v; want complete", st, err)
	}
	checkLedger(t, c)

	// Forget while leased unlinks without punching: the open file keeps
	// its bytes.
	if err := other.Forget(ctx, obj); err != nil {
		t.Fatal(err)
	}
	readBacking(t, b, src)
	if st, _ := c.Status(ctx, obj); st.CachedBlocks != 0 {
		t.Errorf("after Forget: %d blocks cached, want 0", st.CachedBlocks)
	}
	b.Close()
	checkLedger(t, c)

	// Without a lease the blocks are evictable again.
	readAll(t, c, obj, src, testBS)
	readAll(t, c, object("scan-last", 3*16*testBS), newSource(3*16*testBS, 20), testBS)
	if st, _ := c.Status(ctx, obj); st.Complete() {
		t.Errorf("unleased object survived a scan of 3× the budget: %+v", st)
	}
}

// An open checks the records without holding L_dir (after taking it once
// as a barrier), so evictions and admissions elsewhere on the node go on
// while its read of the records waits on the disk; and an eviction storm
// in another process at exactly that moment sees the lease and leaves the
// object whole.
func TestOpenBackingChecksBlocksWithoutHoldingTheDirectoryLock(t *testing.T) {
	ctx := context.Background()
	c, other, obj, src := twoProcessesOneObject(t, "opened", 5)

	stormDone := make(chan error, 1)
	c.disk.testHookAfterBarrier = func() {
		c.disk.testHookAfterBarrier = nil
		go func() {
			// Three times the budget through the other process: it must
			// take L_dir for every admission and eviction.
			// Fill returns once the blocks are stored, which takes L_dir.
			scan := int64(3 * 16 * testBS)
			o, s := object("storm", scan), newSource(scan, 6)
			for off := int64(0); off < scan; off += 4 * testBS {
				if err := other.Fill(ctx, o, s.fetch, off, 4*testBS, FillOptions{}); err != nil {
					stormDone <- err
					return
				}
			}
			stormDone <- nil
		}()
		select {
		case err := <-stormDone:
			if err != nil {
				t.Errorf("eviction storm: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("the other process could not admit or evict while an open checked its blocks: L_dir is held")
		}
	}
	b, err := c.OpenBacking(ctx, obj)
	if err != nil {
		t.Fatalf("open during an eviction storm: %v", err)
	}
	defer b.Close()
	readBacking(t, b, src)
	if st, err := c.Status(ctx, obj); err != nil || !st.Complete() {
		t.Fatalf("leased object after the storm: %+v, %v; want complete", st, err)
	}
	if got := other.Stats().Evictions; got == 0 {
		t.Fatal("the storm evicted nothing: it did not test the lease")
	}
	checkLedger(t, c)
}

// waitComplete waits until every block of obj is on disk (blocks are
// stored after the reader that fetched them is served).
func waitComplete(t *testing.T, c *Cache, obj Object) {
	t.Helper()
	eventually(t, obj.Name+" stored whole", func() bool {
		st, err := c.Status(context.Background(), obj)
		return err == nil && st.Complete()
	})
}

// Readahead fetches finish in any order, but their blocks reach the data
// file in block order (awaitPredecessor), so the file system lays a
// scanned file out contiguously for the kernel's passthrough reads.
func TestBlocksAreStoredInOrder(t *testing.T) {
	c := openCache(t, diskOnly(t.TempDir(), 64*testBS))
	var mu sync.Mutex
	var offs []int64
	c.disk.writeAt = func(f *os.File, p []byte, off int64) (int, error) {
		mu.Lock()
		offs = append(offs, off)
		mu.Unlock()
		return f.WriteAt(p, off)
	}
	size := int64(2 * testBS)
	obj, src := object("scan", size), newSource(size, 5)
	gate, started := make(chan struct{}), make(chan struct{}, 1)
	fetch := func(ctx context.Context, p []byte, off int64) (int, error) {
		if off == 0 {
			started <- struct{}{}
			<-gate // the first block's fetch finishes last
		}
		return src.fetch(ctx, p, off)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.ReadAt(ctx, obj, fetch, make([]byte, testBS), 0)
	}()
	<-started
	go func() {
		defer wg.Done()
		c.ReadAt(ctx, obj, fetch, make([]byte, testBS), testBS)
	}()
	// The second block arrives while the first is still being fetched.
	eventually(t, "the second fetch", func() bool { return src.calls.Load() == 1 })
	close(gate)
	wg.Wait()
	waitComplete(t, c, obj)
	mu.Lock()
	defer mu.Unlock()
	if len(offs) != 2 || offs[0] != 0 || offs[1] != testBS {
		t.Fatalf("blocks written at offsets %v, want [0 %d]", offs, testBS)
	}
}

// A dataset warm-up (prefetch fills) never takes every fetch slot: a
// reader's own miss starts at once even while the warm-up's fetches hang.
func TestPrefetchLeavesFetchSlotsForReaders(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20, MemBudgetBytes: -1, MaxInflightFetches: 4, MaxFetchBytes: testBS})
	ctx := context.Background()
	warm, warmSrc := object("dataset", 16*testBS), newSource(16*testBS, 1)
	gate := make(chan struct{})
	defer close(gate)
	warmSrc.setGate(gate)
	warmSrc.started = make(chan struct{}, 16)
	go c.Fill(ctx, warm, warmSrc.fetch, 0, warm.Size, FillOptions{Prefetch: true})
	for range 3 { // 3/4 of the 4 slots
		<-warmSrc.started
	}
	obj, src := object("reader", testBS), newSource(testBS, 2)
	done := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(ctx, obj, src.fetch, make([]byte, testBS), 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a reader's miss waited behind hanging prefetch fetches")
	}
	if n := len(warmSrc.started); n != 0 {
		t.Errorf("%d more prefetch fetches started: the prefetch cap is not held", n)
	}
}

// inFlight reports how many of obj's blocks have a fetch running.
func inFlight(c *Cache, obj Object) int {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	n := 0
	for b := range nblocksOf(obj.Size, c.bs) {
		if c.flights[blockKey{keyOf(obj), b}] != nil {
			n++
		}
	}
	return n
}

// An open of an object whose every missing block is being fetched (a
// warm-up's Fill) waits for those fetches and is handed the whole object,
// instead of reading it through the daemon; an object only partly in
// flight, or one whose fetches take too long, is not waited for.
func TestOpenBackingWaitsForTheRestOfTheObjectInFlight(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, diskOnly(t.TempDir(), 64*testBS))
	size := int64(5*testBS + 99)
	obj, src := object("warming", size), newSource(size, 11)
	gate := make(chan struct{})
	src.setGate(gate)
	fillErr := make(chan error, 1)
	go func() { fillErr <- c.Fill(ctx, obj, src.fetch, 0, size, FillOptions{Prefetch: true}) }()
	eventually(t, "every block in flight", func() bool { return inFlight(c, obj) == 6 })

	opened := make(chan error, 1)
	var b *Backing
	go func() {
		var err error
		b, err = c.OpenBacking(ctx, obj)
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("open returned (%v) while every block was still being fetched; want it to wait for them", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	if err := <-opened; err != nil {
		t.Fatalf("open after the fetches finished: %v, want the whole object", err)
	}
	defer b.Close()
	readBacking(t, b, src)
	if err := <-fillErr; err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().BackingWaits; got != 1 {
		t.Errorf("BackingWaits = %d, want 1", got)
	}

	// Half the object in flight, nothing else cached: nobody is bringing
	// it in whole, so the open does not wait.
	half, hsrc := object("half", size), newSource(size, 12)
	hgate := make(chan struct{})
	defer close(hgate)
	hsrc.setGate(hgate)
	go func() { _ = c.Fill(ctx, half, hsrc.fetch, 0, 3*testBS, FillOptions{}) }()
	eventually(t, "half in flight", func() bool { return inFlight(c, half) == 3 })
	if _, err := c.OpenBacking(ctx, half); !errors.Is(err, ErrNoBacking) {
		t.Fatalf("half in flight: %v, want ErrNoBacking at once", err)
	}

	// Fetches slower than awaitWholeTimeout: the open gives up on them.
	defer func(d time.Duration) { awaitWholeTimeout = d }(awaitWholeTimeout)
	awaitWholeTimeout = 50 * time.Millisecond
	slow, ssrc := object("slow", size), newSource(size, 13)
	ssrc.setGate(hgate)
	go func() { _ = c.Fill(ctx, slow, ssrc.fetch, 0, size, FillOptions{}) }()
	eventually(t, "slow object in flight", func() bool { return inFlight(c, slow) == 6 })
	if _, err := c.OpenBacking(ctx, slow); !errors.Is(err, ErrNoBacking) {
		t.Fatalf("fetches stuck past the wait: %v, want ErrNoBacking", err)
	}
	if got := c.Stats().BackingWaits; got != 1 {
		t.Errorf("BackingWaits = %d after the two opens that did not wait it out, want still 1", got)
	}
}

// A Fill with LeaveJoined fetches what nobody is fetching and returns
// without waiting for the blocks a reader's fetch has in flight; without
// it, Fill waits for them too.
func TestFillLeavesJoinedBlocksToTheirReader(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, diskOnly(t.TempDir(), 64*testBS))
	size := int64(6 * testBS)
	obj, src := object("raced", size), newSource(size, 21)
	gate := make(chan struct{})
	// The reader's fetch of the first three blocks is held; the rest of
	// the object is served at once.
	fetch := func(ctx context.Context, p []byte, off int64) (int, error) {
		if off < 3*testBS {
			select {
			case <-gate:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		return src.fetch(ctx, p, off)
	}
	readDone := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(ctx, obj, fetch, make([]byte, 3*testBS), 0)
		readDone <- err
	}()
	eventually(t, "the reader's three blocks in flight", func() bool { return inFlight(c, obj) == 3 })

	filled := make(chan error, 1)
	go func() { filled <- c.Fill(ctx, obj, fetch, 0, size, FillOptions{Prefetch: true, LeaveJoined: true}) }()
	select {
	case err := <-filled:
		if err != nil {
			t.Fatalf("fill: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a LeaveJoined fill waited for the reader's held fetch")
	}
	if st, err := c.Status(ctx, obj); err != nil || st.CachedBlocks != 3 {
		t.Fatalf("after the fill: %+v, %v; want its own 3 blocks stored", st, err)
	}

	// Without LeaveJoined the fill waits for the reader's blocks.
	plainDone := make(chan error, 1)
	go func() { plainDone <- c.Fill(ctx, obj, fetch, 0, size, FillOptions{Prefetch: true}) }()
	select {
	case err := <-plainDone:
		t.Fatalf("a plain fill returned (%v) while the reader's blocks were held", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
	if err := <-plainDone; err != nil {
		t.Fatal(err)
	}
	waitComplete(t, c, obj)
}
