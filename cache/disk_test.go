package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/testenv"
)

// diskOnly is a disk tier without RAM, so every hit is a disk read.
func diskOnly(dir string, budget int64) Config {
	return Config{Dir: dir, DiskBudgetBytes: budget, MemBudgetBytes: -1}
}

func TestChecksumCorruptionRefetches(t *testing.T) {
	cases := []struct {
		name    string
		corrupt func(t *testing.T, data string)
	}{
		{"flipped byte", func(t *testing.T, data string) {
			f, err := os.OpenFile(data, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			f.ReadAt(b, testBS+77)
			b[0] ^= 0xff
			f.WriteAt(b, testBS+77)
		}},
		{"zeroed block", func(t *testing.T, data string) {
			f, err := os.OpenFile(data, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.WriteAt(make([]byte, testBS), testBS)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := openCache(t, diskOnly(t.TempDir(), 64<<20))
			size := int64(3 * testBS)
			src := newSource(size, 11)
			obj := object("corrupt", size)
			readAll(t, c, obj, src, testBS)
			c.ramWait()
			tc.corrupt(t, c.disk.dataPath(keyOf(obj)))

			readAll(t, c, obj, src, testBS)
			if got := src.calls.Load(); got != 4 {
				t.Errorf("%d fetches, want 3 cold + 1 refetch of the corrupt block", got)
			}
			if got := c.Stats().ChecksumFailures; got != 1 {
				t.Errorf("%d checksum failures, want 1", got)
			}
			c.ramWait()
			readAll(t, c, obj, src, testBS) // the refetched block is good again
			if got := src.calls.Load(); got != 4 {
				t.Errorf("after the refetch: %d fetches, want 4", got)
			}
			checkLedger(t, c)
		})
	}
}

func TestRestartReusesDisk(t *testing.T) {
	dir := t.TempDir()
	size := int64(testenv.Pick(5, 40)*testBS + 99)
	src := newSource(size, 12)
	obj := object("restart", size)
	c1 := openCache(t, diskOnly(dir, 256<<20))
	readAll(t, c1, obj, src, 3000)
	c1.ramWait()
	if err := c1.Fill(context.Background(), object("pinned", testBS), newSource(testBS, 1).fetch, 0, testBS, FillOptions{Pin: true}); err != nil {
		t.Fatal(err)
	}
	used := c1.Stats().DiskUsed
	c1.Close()

	c2 := openCache(t, Config{Dir: dir, DiskBudgetBytes: 256 << 20, MemBudgetBytes: 16 << 20})
	calls := src.calls.Load()
	readAll(t, c2, obj, src, 7000)
	if got := src.calls.Load() - calls; got != 0 {
		t.Errorf("restarted cache fetched %d times, want 0", got)
	}
	if got := c2.Stats().DiskUsed; got != used {
		t.Errorf("restart: %d bytes in use, was %d", got, used)
	}
	st, _ := c2.Status(context.Background(), object("pinned", testBS))
	if st.PinnedBlocks != 1 {
		t.Errorf("pin lost over a restart: %+v", st)
	}
	checkLedger(t, c2)
}

func TestCrashLeftoversAreCleaned(t *testing.T) {
	dir := t.TempDir()
	size := int64(4 * testBS)
	srcs := map[string]*source{}
	c1 := openCache(t, diskOnly(dir, 64<<20))
	for i, name := range []string{"reserved", "truncated", "orphan", "leak", "ok"} {
		srcs[name] = newSource(size, uint64(i))
		readAll(t, c1, object(name, size), srcs[name], testBS)
	}
	c1.ramWait()
	d := c1.disk
	path := func(name, suffix string) string {
		if suffix == idxSuffix {
			return d.idxPath(keyOf(object(name, size)))
		}
		return d.dataPath(keyOf(object(name, size)))
	}
	writeRecord := func(name string, b int64, r record) {
		of, err := d.openFile(keyOf(object(name, size)))
		if err != nil {
			t.Fatal(err)
		}
		defer of.close()
		if err := of.writeRecord(b, r); err != nil {
			t.Fatal(err)
		}
	}
	c1.Close()

	// A writer killed between reserving and committing block 2: RESERVED
	// with its bytes written.
	writeRecord("reserved", 2, record{state: mkState(kindReserve), length: testBS})
	// A writer killed between writing bytes and reserving... (cannot happen:
	// reservation comes first) and an evictor killed between unmarking and
	// punching: absent record, bytes still allocated.
	writeRecord("leak", 1, record{})
	// A data file cut short.
	if err := os.Truncate(path("truncated", dataSuffix), testBS); err != nil {
		t.Fatal(err)
	}
	// A process killed while creating an object: data file without sidecar.
	if err := os.Remove(path("orphan", idxSuffix)); err != nil {
		t.Fatal(err)
	}
	// A temp sidecar and a torn ledger.
	mustFile(t, filepath.Join(dir, tmpDirName, "idx-12345"), []byte("half a header"))
	mustFile(t, filepath.Join(dir, ledgerName), []byte("garbage"))

	c2 := openCache(t, diskOnly(dir, 64<<20))
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDirName)); len(ents) != 0 {
		t.Errorf("tmp/ still holds %d entries", len(ents))
	}
	for _, p := range []string{path("orphan", dataSuffix), path("truncated", idxSuffix), path("truncated", dataSuffix)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived: %v", filepath.Base(p), err)
		}
	}
	for name, blk := range map[string]int64{"reserved": 2, "leak": 1} {
		st, _ := c2.Status(context.Background(), object(name, size))
		if st.CachedBlocks != 3 {
			t.Errorf("%s: %d blocks cached, want 3", name, st.CachedBlocks)
		}
		if allocated(t, path(name, dataSuffix), blk*testBS, testBS) {
			t.Errorf("%s: bytes of the dead block %d are still allocated", name, blk)
		}
	}
	checkLedger(t, c2)
	// Everything reads back correctly; only the lost blocks are fetched:
	// one each of "reserved" and "leak", all four of "orphan" and "truncated".
	var before, after int64
	for _, s := range srcs {
		before += s.calls.Load()
	}
	for name, s := range srcs {
		readAll(t, c2, object(name, size), s, testBS)
	}
	for _, s := range srcs {
		after += s.calls.Load()
	}
	if got := after - before; got != 10 {
		t.Errorf("refetched %d blocks, want 10", got)
	}
}

// allocated reports whether any byte of [off, off+n) of path is allocated.
func allocated(t *testing.T, path string, off, n int64) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err != nil {
		return false // ENXIO: no data at or after off
	}
	return data < off+n
}

func TestScanResistance(t *testing.T) {
	budgetBlocks := int64(testenv.Pick(32, 256))
	overhead := int64(32 * pageSize) // ledger, directories, sidecars
	hotBlocks := budgetBlocks / 4
	hotSize, scanSize := hotBlocks*testBS, 3*budgetBlocks*testBS

	patterns := map[string]func(c *Cache, obj Object, src *source){
		// A sequential reader in requests smaller than a block.
		"sub-block reads": func(c *Cache, obj Object, src *source) {
			readAll(t, c, obj, src, 16<<10)
		},
		// Readahead fills ahead, the application reads behind.
		"fill then read": func(c *Cache, obj Object, src *source) {
			for off := int64(0); off < obj.Size; off += 4 * testBS {
				if err := c.Fill(context.Background(), obj, src.fetch, off, 4*testBS, FillOptions{}); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 32<<10)
				for o := off; o < min(off+4*testBS, obj.Size); o += int64(len(buf)) {
					if _, err := c.ReadAt(context.Background(), obj, src.fetch, buf, o); err != nil {
						t.Fatal(err)
					}
				}
			}
		},
	}
	for name, scan := range patterns {
		t.Run(name, func(t *testing.T) {
			c := openCache(t, diskOnly(t.TempDir(), budgetBlocks*testBS+overhead))
			hot, hotSrc := object("hot", hotSize), newSource(hotSize, 1)
			// The hot set: read, and read again later (a second epoch).
			readAll(t, c, hot, hotSrc, 16<<10)
			c.ramWait()
			readAll(t, c, hot, hotSrc, 16<<10)
			scan(c, object("scan", scanSize), newSource(scanSize, 2))
			c.ramWait()
			if c.Stats().Evictions == 0 {
				t.Fatal("the scan evicted nothing; the test does not test anything")
			}
			calls := hotSrc.calls.Load()
			readAll(t, c, hot, hotSrc, testBS)
			if got := hotSrc.calls.Load() - calls; got != 0 {
				t.Errorf("a scan of 3x the budget evicted %d of %d hot blocks", got, hotBlocks)
			}
			checkLedger(t, c)
		})
	}
}

func TestPinnedRangesSurviveEviction(t *testing.T) {
	budgetBlocks := int64(16)
	c := openCache(t, diskOnly(t.TempDir(), budgetBlocks*testBS+32*pageSize))
	pinned, pinSrc := object("checkpoint", 8*testBS), newSource(8*testBS, 1)
	ctx := context.Background()
	if err := c.Fill(ctx, pinned, pinSrc.fetch, 0, pinned.Size, FillOptions{Pin: true}); err != nil {
		t.Fatal(err)
	}
	scan := func() {
		size := 3 * budgetBlocks * testBS
		readAll(t, c, object("scan", size), newSource(size, 2), testBS)
		c.ramWait()
	}
	scan()
	st, _ := c.Status(ctx, pinned)
	if st.PinnedBlocks != 8 || !st.Complete() {
		t.Fatalf("after a scan: %+v, want 8 pinned blocks, complete", st)
	}
	calls := pinSrc.calls.Load()
	readAll(t, c, pinned, pinSrc, testBS)
	if pinSrc.calls.Load() != calls {
		t.Error("pinned blocks were fetched again")
	}
	// Pinning more than the budget can hold fails with ErrNoSpace, and
	// readers are still served.
	huge, hugeSrc := object("huge", 2*budgetBlocks*testBS), newSource(2*budgetBlocks*testBS, 3)
	if err := c.Fill(ctx, huge, hugeSrc.fetch, 0, huge.Size, FillOptions{Pin: true}); !errors.Is(err, ErrNoSpace) {
		t.Errorf("pinning twice the budget: %v, want ErrNoSpace", err)
	}
	readAll(t, c, huge, hugeSrc, testBS)
	checkLedger(t, c)
	// Unpinned, the checkpoint becomes evictable.
	if err := c.Unpin(ctx, pinned, 0, pinned.Size); err != nil {
		t.Fatal(err)
	}
	if err := c.Unpin(ctx, huge, 0, huge.Size); err != nil {
		t.Fatal(err)
	}
	scan()
	if st, _ := c.Status(ctx, pinned); st.CachedBlocks == 8 || st.PinnedBlocks != 0 {
		t.Errorf("after Unpin and a scan: %+v, want evicted", st)
	}
	checkLedger(t, c)
}

func TestBudgetRespected(t *testing.T) {
	budgetBlocks := int64(testenv.Pick(24, 128))
	budget := budgetBlocks*testBS + 16*pageSize
	dir := t.TempDir()
	c := openCache(t, diskOnly(dir, budget))
	objects := 6
	objSize := budgetBlocks * testBS * 4 / int64(objects)
	srcs := make([]*source, objects)
	for i := range srcs {
		srcs[i] = newSource(objSize+int64(i)*1000, uint64(i))
	}
	var stop sync.WaitGroup
	done := make(chan struct{})
	var maxDU int64
	stop.Go(func() { // du while the readers run
		for {
			select {
			case <-done:
				return
			default:
			}
			// Under L_dir: every change of allocation but the bytes of
			// reserved blocks happens under it, so du is a snapshot.
			if err := c.disk.lock(); err != nil {
				t.Error(err)
				return
			}
			maxDU = max(maxDU, du(t, dir))
			c.disk.unlock()
		}
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 20000)
			for range testenv.Pick(300, 3000) {
				i := rng.IntN(objects)
				obj := object(fmt.Sprintf("obj%d", i), srcs[i].size)
				off := rng.Int64N(obj.Size)
				n, err := c.ReadAt(context.Background(), obj, srcs[i].fetch, buf, off)
				if err != nil && off+int64(n) != obj.Size {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf[:n], srcs[i].want(off, int64(n))) {
					t.Error("wrong bytes")
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	stop.Wait()
	c.ramWait()
	if got := du(t, dir); got > budget+testBS {
		t.Errorf("du = %d after the run, budget %d + one block %d", got, budget, testBS)
	}
	if maxDU > budget+testBS {
		t.Errorf("du peaked at %d during the run, budget %d + one block %d", maxDU, budget, testBS)
	}
	if c.Stats().Evictions == 0 {
		t.Error("nothing was evicted; the budget was never tested")
	}
	checkLedger(t, c)
}

func TestWriteFailureStillServesBytes(t *testing.T) {
	c := openCache(t, Config{Dir: t.TempDir(), DiskBudgetBytes: 64 << 20, MemBudgetBytes: -1})
	base := c.Stats().DiskUsed
	var failing sync.Mutex
	fail := true
	c.disk.writeAt = func(f *os.File, p []byte, off int64) (int, error) {
		failing.Lock()
		defer failing.Unlock()
		if fail {
			// Half the bytes, then the disk is full.
			n, _ := f.WriteAt(p[:len(p)/2], off)
			return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return f.WriteAt(p, off)
	}
	size := int64(3*testBS + 5)
	src := newSource(size, 13)
	obj := object("full", size)
	readAll(t, c, obj, src, 10000) // no error, correct bytes
	c.ramWait()
	readAll(t, c, obj, src, testBS)
	c.ramWait()
	s := c.Stats()
	if s.WriteFailures == 0 {
		t.Error("no write failure recorded")
	}
	if st, _ := c.Status(context.Background(), obj); st.CachedBlocks != 0 {
		t.Errorf("%d blocks marked cached although every write failed", st.CachedBlocks)
	}
	checkLedger(t, c)
	if used := c.Stats().DiskUsed; used-base > 2*pageSize { // sidecar + fan-out dir
		t.Errorf("failed writes left %d bytes charged", used-base)
	}
	failing.Lock()
	fail = false
	failing.Unlock()
	readAll(t, c, obj, src, testBS)
	c.ramWait()
	if st, _ := c.Status(context.Background(), obj); !st.Complete() {
		t.Errorf("after the disk recovered: %+v", st)
	}
}

// TestENOSPCOnSmallFilesystem fills a real 2 MiB tmpfs with a budget far
// above its size.
func TestENOSPCOnSmallFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=2m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	c := openCache(t, Config{Dir: dir, DiskBudgetBytes: 64 << 20, MemBudgetBytes: 1 << 20})
	var srcs []*source
	for i := range 8 {
		srcs = append(srcs, newSource(10*testBS, uint64(i)))
		readAll(t, c, object(fmt.Sprint("f", i), 10*testBS), srcs[i], 30000)
	}
	c.ramWait()
	for i := range 8 {
		readAll(t, c, object(fmt.Sprint("f", i), 10*testBS), srcs[i], testBS)
	}
	if c.Stats().WriteFailures == 0 {
		t.Error("a 2 MiB filesystem took 5 MiB without a write failure")
	}
	checkLedger(t, c)
}

func TestTwoCachesOneDir(t *testing.T) {
	dir := t.TempDir()
	budget := int64(20*testBS + 32*pageSize)
	a := openCache(t, diskOnly(dir, budget))
	b := openCache(t, Config{Dir: dir, DiskBudgetBytes: budget, MemBudgetBytes: 4 << 20})
	hammer(t, []*Cache{a, b}, 4, testenv.Pick(200, 2000), 1)
	a.ramWait()
	b.ramWait()
	checkLedger(t, a)
	if got := du(t, dir); got > budget+testBS {
		t.Errorf("du = %d, budget %d + one block", got, budget)
	}
}

// TestScanResistanceAcrossCaches: one Cache's hot set survives another
// Cache (another mount daemon) scanning 3x the shared budget.
func TestScanResistanceAcrossCaches(t *testing.T) {
	dir := t.TempDir()
	budgetBlocks := int64(testenv.Pick(32, 256))
	budget := budgetBlocks*testBS + 32*pageSize
	trainer := openCache(t, diskOnly(dir, budget))
	scanner := openCache(t, diskOnly(dir, budget))
	hotSize := budgetBlocks / 4 * testBS
	hot, hotSrc := object("hot", hotSize), newSource(hotSize, 1)
	readAll(t, trainer, hot, hotSrc, 16<<10)
	trainer.ramWait()
	readAll(t, trainer, hot, hotSrc, 16<<10) // the second epoch: hot
	scanSize := 3 * budgetBlocks * testBS
	readAll(t, scanner, object("scan", scanSize), newSource(scanSize, 2), 16<<10)
	scanner.ramWait()
	if scanner.Stats().Evictions == 0 {
		t.Fatal("the scanner evicted nothing")
	}
	calls := hotSrc.calls.Load()
	readAll(t, trainer, hot, hotSrc, testBS)
	if got := hotSrc.calls.Load() - calls; got != 0 {
		t.Errorf("another process's scan evicted %d of %d hot blocks", got, hotSize/testBS)
	}
	checkLedger(t, trainer)
}

// TestJournalOverflowRescans: a process that stayed idle while another
// stored more blocks than the journal ring holds still finds victims (by
// rescanning), and stores its own blocks.
func TestJournalOverflowRescans(t *testing.T) {
	dir := t.TempDir()
	budget := int64(16*testBS + 32*pageSize)
	idle := openCache(t, diskOnly(dir, budget))
	busy := openCache(t, diskOnly(dir, budget))
	ring := int64(idle.disk.ring)
	for i := int64(0); busy.disk.seq <= uint64(ring)+10; i++ {
		size := int64(4 * testBS)
		readAll(t, busy, object(fmt.Sprint("busy", i), size), newSource(size, uint64(i)), testBS)
		busy.ramWait()
		if err := busy.disk.lock(); err != nil { // refresh seq
			t.Fatal(err)
		}
		busy.disk.unlock()
	}
	scanned := func() time.Time {
		idle.disk.lock()
		defer idle.disk.unlock()
		return idle.disk.lastScan
	}
	before := scanned()
	if err := idle.Fill(context.Background(), object("late", 8*testBS), newSource(8*testBS, 7).fetch, 0, 8*testBS, FillOptions{}); err != nil {
		t.Fatalf("Fill after the journal wrapped: %v", err)
	}
	if !scanned().After(before) {
		t.Error("the lagging process did not rescan")
	}
	if st, _ := idle.Status(context.Background(), object("late", 8*testBS)); !st.Complete() {
		t.Errorf("late object: %+v", st)
	}
	checkLedger(t, idle)
}

// hammer reads random ranges of a fixed set of objects through the caches
// from g goroutines each and fails the test on any wrong byte.
func hammer(t testing.TB, cs []*Cache, g, iters int, seed uint64) {
	const objects = 5
	var wg sync.WaitGroup
	for ci, c := range cs {
		for gi := range g {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(ci*100+gi)))
				buf := make([]byte, 3*testBS)
				for range iters {
					i := rng.IntN(objects)
					src := newSource(int64(i+1)*3*testBS+123, uint64(i))
					obj := object(fmt.Sprint("shared", i), src.size)
					off := rng.Int64N(obj.Size)
					p := buf[:1+rng.IntN(len(buf))]
					if rng.IntN(10) == 0 {
						// Under contention every block left may be another
						// writer's reservation: Fill may report ErrNoSpace.
						if err := c.Fill(context.Background(), obj, src.fetch, off, int64(len(p)), FillOptions{}); err != nil && !errors.Is(err, ErrNoSpace) {
							t.Errorf("Fill: %v", err)
							return
						}
						continue
					}
					n, err := c.ReadAt(context.Background(), obj, src.fetch, p, off)
					if err != nil && off+int64(n) != obj.Size {
						t.Errorf("ReadAt: %v", err)
						return
					}
					if !bytes.Equal(p[:n], src.want(off, int64(n))) {
						t.Errorf("wrong bytes from %s at %d", obj.Name, off)
						return
					}
				}
			})
		}
	}
	wg.Wait()
}

// helperEnv makes the test binary act as a second process hammering a
// cache directory (see TestTwoProcesses).
const helperEnv = "BLOBFS_CACHE_HELPER_DIR"

func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper for TestTwoProcesses")
	}
	var budget int64
	fmt.Sscan(os.Getenv("BLOBFS_CACHE_HELPER_BUDGET"), &budget)
	c, err := Open(context.Background(), Config{Dir: dir, DiskBudgetBytes: budget, BlockSize: testBS, MemBudgetBytes: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Println("helper: ready")
	var iters int
	fmt.Sscan(os.Getenv("BLOBFS_CACHE_HELPER_ITERS"), &iters)
	hammer(t, []*Cache{c}, 2, iters, 99)
}

func TestTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	budget := int64(20*testBS + 32*pageSize)
	iters := testenv.Pick(300, 3000)
	helper := func(iters int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir,
			fmt.Sprint("BLOBFS_CACHE_HELPER_BUDGET=", budget),
			fmt.Sprint("BLOBFS_CACHE_HELPER_ITERS=", iters))
		return cmd
	}
	other := helper(iters)
	var out bytes.Buffer
	other.Stdout, other.Stderr = &out, &out
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	c := openCache(t, diskOnly(dir, budget))
	hammer(t, []*Cache{c}, 2, iters, 1)
	if err := other.Wait(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out.String())
	}
	c.ramWait()
	checkLedger(t, c)

	// A process killed in the middle of its work leaves nothing that
	// breaks the others or the ledger.
	victim := helper(1 << 30)
	pipe, err := victim.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make([]byte, len("helper: ready\n"))
	if _, err := pipe.Read(ready); err != nil {
		t.Fatal(err)
	}
	hammer(t, []*Cache{c}, 2, iters/2, 2) // both at work
	victim.Process.Kill()
	victim.Wait()
	hammer(t, []*Cache{c}, 2, iters/4, 3)
	c.ramWait()
	c.Close()
	c2 := openCache(t, diskOnly(dir, budget)) // reconciles the victim's debris
	checkLedger(t, c2)
	hammer(t, []*Cache{c2}, 2, iters/4, 4)
	if got := du(t, dir); got > budget+testBS {
		t.Errorf("du = %d, budget %d + one block", got, budget)
	}
}
