package mounte2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// The node block cache (#5) through the real binary and kernel FUSE, with
// a counting proxy (azurite.Counter) between the mount and Azurite, so
// each test asserts what reached the backend, not only what was read.

const blockBytes = 1 << 20 // the cache's block size (cache.DefaultBlockSize)

// countedMount mounts container through a fresh Counter, with metrics on
// a free loopback port (see cacheHits).
func countedMount(t *testing.T, container string, args ...string) (*mount, *azurite.Counter) {
	t.Helper()
	ctr := azurite.NewCounterT(t, az)
	args = append([]string{"--metrics-addr", "127.0.0.1:0"}, args...)
	return mountT(t, container, mountConfig{Endpoint: ctr.BlobEndpoint(), Args: args}), ctr
}

var metricsAddr = regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)

// cacheHits is the daemon's count of blocks served from its cache (both
// tiers): a read that did not raise it was served by the kernel's page
// cache, not by the daemon.
func cacheHits(t *testing.T, m *mount) float64 {
	t.Helper()
	v, err := metricSum(m, "blobfs_cache_hits_total{")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// diskUsed is the cache directory's ledger as the daemon reports it: the
// bytes every process sharing the directory has charged (0 if it cannot
// be read; safe off the test goroutine).
func diskUsed(m *mount) float64 {
	v, _ := metricSum(m, "blobfs_cache_disk_used_bytes ")
	return v
}

// metricSum sums the daemon's metric lines that start with prefix.
func metricSum(m *mount, prefix string) (float64, error) {
	sm := metricsAddr.FindStringSubmatch(readFile(m.LogFile))
	if sm == nil {
		return 0, fmt.Errorf("no metrics address in the daemon log:\n%s", tail(readFile(m.LogFile), 2000))
	}
	resp, err := http.Get("http://" + sm[1] + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	return total, nil
}

// dropPageCache drops the kernel's cached pages of path, so the next read
// reaches the daemon (and its block cache) instead of the page cache.
func dropPageCache(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("fadvise DONTNEED %s: %v", path, err)
	}
}

// readWhole reads path through the mount in 1 MiB reads and checks it
// against want.
func readWhole(t *testing.T, path string, want []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %s: %d bytes that differ from the %d written (first difference at %d)", path, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// settle waits until the counter stops moving (background readahead that
// was already running finishes) and returns the counts. It asserts
// nothing about time: it only keeps a test from counting a straggler of
// the previous step against the next.
func settle(ctr *azurite.Counter) azurite.Counts {
	prev := ctr.Counts()
	for {
		time.Sleep(200 * time.Millisecond)
		c := ctr.Counts()
		if c.Requests == prev.Requests && c.ReadBytes == prev.ReadBytes {
			return c
		}
		prev = c
	}
}

// A file read once is served again from the node cache with zero backend
// requests (the page cache dropped in between); after a remount on the same
// cache directory the cached data costs zero backend bytes; a block
// corrupted on disk is detected, dropped and refetched, never served.
func TestMountCacheServesRepeatReadsAndSurvivesRemount(t *testing.T) {
	requireHarness(t)
	size := testenv.Pick(24<<20, 256<<20)
	c := newContainer(t)
	data := pseudoRandom(501, size)
	putBlob(t, newStore(t, c), "shard.bin", data, nil)

	// Small RAM tier: the repeat read must come from the disk tier.
	m, ctr := countedMount(t, c, "--cache-mem-mb", "1")
	p := m.Path("shard.bin")
	readWhole(t, p, data)
	first := settle(ctr)
	if first.ReadBytes < int64(size) {
		t.Fatalf("first read: %v, want at least the file's %d bytes", first, size)
	}

	// 1. Second read: no request at all (attributes are cached for the
	// attribute TTL, blocks are on disk, the identity was proven by the
	// first read's own fetches).
	dropPageCache(t, p)
	ctr.Reset()
	hits := cacheHits(t, m)
	readWhole(t, p, data)
	// Only a listing may show up: the first read finished a shard in
	// order, and the automatic prefetch lists its directory for the next
	// shards in the background (late on a loaded machine).
	if got := settle(ctr); got.Reads != 0 || got.Requests != got.ByMethod["GET"] {
		t.Fatalf("second read of a cached file reached the backend: %v", got)
	}
	if got := cacheHits(t, m) - hits; got < float64(size/blockBytes) {
		t.Fatalf("second read: %v block cache hits, want at least %d (one per block): the daemon did not serve it", got, size/blockBytes)
	}

	// 2. Remount on the same cache directory: the new daemon reuses the
	// blocks after checking the blob's ETag (HEADs), so zero bytes.
	cacheDir := m.CacheDir
	m.unmount(t)
	m2, ctr2 := countedMount(t, c, "--cache-dir", cacheDir, "--cache-mem-mb", "1")
	readWhole(t, m2.Path("shard.bin"), data)
	if got := settle(ctr2); got.ReadBytes != 0 || got.Reads != 0 {
		t.Fatalf("read after a remount on the same cache dir fetched from the backend: %v", got)
	}
	t.Logf("after remount: %v", ctr2.Counts())

	// 3. Corrupt one block on disk (between mounts, as a bad disk would);
	// the next daemon must notice, refetch exactly that block and serve
	// the right bytes.
	m2.unmount(t)
	dataFiles, err := filepath.Glob(filepath.Join(cacheDir, "blocks", "objects", "*", "*.data"))
	if err != nil || len(dataFiles) != 1 {
		t.Fatalf("cache data files %v (%v), want exactly one for the one blob", dataFiles, err)
	}
	const bad = 5 // corrupt block 5
	flipBytes(t, dataFiles[0], bad*blockBytes+12345)
	m3, ctr3 := countedMount(t, c, "--cache-dir", cacheDir, "--cache-mem-mb", "1")
	readWhole(t, m3.Path("shard.bin"), data)
	got := settle(ctr3)
	if got.ReadBytes < blockBytes || got.ReadBytes > 2*blockBytes {
		t.Fatalf("read with one corrupt cached block: %v, want exactly that block (%d bytes) refetched", got, blockBytes)
	}
	// The refetched block replaced the corrupt one: a fourth read is clean.
	dropPageCache(t, m3.Path("shard.bin"))
	ctr3.Reset()
	readWhole(t, m3.Path("shard.bin"), data)
	if got := settle(ctr3); got.Reads != 0 {
		t.Fatalf("read after the refetch still reached the backend: %v", got)
	}
	m3.unmount(t)
	if log := readFile(m3.LogFile); !strings.Contains(log, "corrupt block") {
		t.Errorf("the daemon did not log the corrupt block; log:\n%s", tail(log, 3000))
	}
}

// flipBytes inverts 16 bytes of path at off.
func flipBytes(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 16)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// A blob overwritten by another writer while a mount has it open and
// partly cached: the open file never returns a byte of the new version
// (reads of what it has not cached fail with ESTALE), and an open after
// the attribute TTL reads the new version whole — nothing of the old one
// from the node cache or the kernel's page cache.
func TestMountCacheOverwriteNeverMixesVersions(t *testing.T) {
	requireHarness(t)
	size := testenv.Pick(32<<20, 256<<20)
	c := newContainer(t)
	st := newStore(t, c)
	v1 := pseudoRandom(601, size)
	v2 := pseudoRandom(602, size)
	putBlob(t, st, "ckpt.bin", v1, nil)
	m, _ := countedMount(t, c, "--attr-timeout", "1s", "--entry-timeout", "1s", "--negative-timeout", "1s", "--list-timeout", "1s")
	p := m.Path("ckpt.bin")

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, blockBytes)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, v1[:blockBytes]) {
		t.Fatal("first block is not v1")
	}
	putBlob(t, st, "ckpt.bin", v2, nil)

	// The open file: every byte it returns is v1's; what is not cached
	// fails with ESTALE.
	var stale bool
	for off := int64(blockBytes); off < int64(size); off += blockBytes {
		n, err := f.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], v1[off:off+int64(n)]) {
			if bytes.Equal(buf[:n], v2[off:off+int64(n)]) {
				t.Fatalf("the file opened on v1 returned v2's bytes at %d: versions mixed", off)
			}
			t.Fatalf("the file opened on v1 returned wrong bytes at %d", off)
		}
		if err != nil {
			if !errors.Is(err, syscall.ESTALE) {
				t.Fatalf("read at %d after the overwrite: %v, want ESTALE or v1's bytes", off, err)
			}
			stale = true
			break
		}
	}
	if !stale {
		t.Logf("the whole of v1 had been read ahead before the overwrite: no ESTALE to see")
	}
	f.Close()

	// Close-to-open: after the attribute TTL a new open sees v2 whole.
	time.Sleep(1500 * time.Millisecond)
	readWhole(t, p, v2)
	// And again from the caches (node cache and page cache kept for the
	// unchanged ETag), still v2 only.
	readWhole(t, p, v2)
}

// Scan resistance: a hot file survives a sequential scan of three times
// the cache budget, and its next read costs zero backend requests.
func TestMountCacheScanResistance(t *testing.T) {
	requireHarness(t)
	budgetMB := testenv.Pick(32, 256)
	c := newContainer(t)
	st := newStore(t, c)
	hot := pseudoRandom(701, 4<<20)
	putBlob(t, st, "hot.bin", hot, nil)
	const scanFile = 8 << 20
	nScan := 3 * budgetMB << 20 / scanFile
	for i := range nScan {
		putBlob(t, st, fmt.Sprintf("scan/%03d.bin", i), pseudoRandom(uint64(800+i), scanFile), nil)
	}
	m, ctr := countedMount(t, c, "--cache-size-mb", fmt.Sprint(budgetMB), "--cache-mem-mb", "1")

	// Hot: read a few times (the kernel's page cache dropped each time, so
	// the daemon sees every read).
	for i := range 3 {
		hits := cacheHits(t, m)
		readWhole(t, m.Path("hot.bin"), hot)
		dropPageCache(t, m.Path("hot.bin"))
		if got := cacheHits(t, m) - hits; i > 0 && got < 4 {
			t.Fatalf("read %d of the hot file: %v cache hits, want 4: the daemon did not serve it", i+1, got)
		}
	}
	for i := range nScan {
		p := m.Path(fmt.Sprintf("scan/%03d.bin", i))
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, f)
		f.Close()
		if err != nil || n != scanFile {
			t.Fatalf("scan %s: %d bytes, %v", p, n, err)
		}
		dropPageCache(t, p)
	}
	scanned := settle(ctr)
	if scanned.ReadBytes < int64(nScan*scanFile) {
		t.Fatalf("the scan fetched %d bytes, less than the %d it read: not a scan through the cache", scanned.ReadBytes, nScan*scanFile)
	}
	ctr.Reset()
	readWhole(t, m.Path("hot.bin"), hot)
	if got := settle(ctr); got.Requests != 0 {
		t.Fatalf("the hot file was flushed by a scan of 3x the cache: its next read made %v", got)
	}
	if used := du(t, filepath.Join(m.CacheDir, "blocks")); used > int64(budgetMB)<<20 {
		t.Errorf("cache directory holds %d bytes, over the %d MiB budget", used, budgetMB)
	}
}

// Random reads fetch small ranges: 2 MiB of cold 4 KiB random reads over a
// large file pull at most 8 MiB from the backend (a whole 1 MiB block per
// read would pull 512 MiB).
func TestMountCacheRandomReadsPullLittle(t *testing.T) {
	requireHarness(t)
	size := testenv.Pick[int64](128<<20, 1<<30)
	c := newContainer(t)
	st := newStore(t, c)
	data := make([]byte, size)
	if _, err := io.ReadFull(randomStream(901), data); err != nil {
		t.Fatal(err)
	}
	putBlob(t, st, "big.bin", data, nil)
	m, ctr := countedMount(t, c)

	// The mount's readahead is raised deliberately: FUSE's default is 128
	// KiB and go-fuse's MaxReadAhead can only lower it, so the daemon
	// writes the mount's bdi read_ahead_kb (fs.DefaultReadAheadKB). Random
	// reads must stay small all the same.
	var mst unix.Stat_t
	if err := unix.Stat(m.Dir, &mst); err != nil {
		t.Fatal(err)
	}
	ra := strings.TrimSpace(readFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(mst.Dev), unix.Minor(mst.Dev))))
	if ra != "4096" {
		t.Errorf("the mount's read_ahead_kb is %q, want 4096", ra)
	}

	f, err := os.Open(m.Path("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(9, 10))
	buf := make([]byte, 4096)
	const reads = (2 << 20) / 4096
	ctr.Reset()
	for range reads {
		off := 4096 * (1 + rng.Int64N(size/4096-1))
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("read 4 KiB at %d: %v", off, err)
		}
		if !bytes.Equal(buf, data[off:off+4096]) {
			t.Fatalf("wrong bytes at %d", off)
		}
	}
	got := settle(ctr)
	t.Logf("2 MiB of cold random 4 KiB reads: %v", got)
	if got.ReadBytes > 8<<20 {
		t.Fatalf("2 MiB of cold random 4 KiB reads pulled %d bytes from the backend, want at most 8 MiB", got.ReadBytes)
	}
}

// Two mount daemons and a standalone `blobfs prefetch` process on one cache
// directory, reading and filling overlapping files concurrently with a
// budget smaller than the data: every byte read is right, and the
// directory never holds more than the budget.
func TestMountCacheTwoDaemonsShareOneDir(t *testing.T) {
	requireHarness(t)
	const budgetMB = 24
	nFiles := testenv.Pick(8, 24)
	const fileSize = 6 << 20
	c := newContainer(t)
	st := newStore(t, c)
	files := make([][]byte, nFiles)
	for i := range files {
		files[i] = pseudoRandom(uint64(1000+i), fileSize)
		putBlob(t, st, fmt.Sprintf("f%02d.bin", i), files[i], nil)
	}
	shared := filepath.Join(testDir(t, "shared"), "cache")
	args := []string{"--cache-dir", shared, "--cache-size-mb", fmt.Sprint(budgetMB), "--cache-mem-mb", "1"}
	a, _ := countedMount(t, c, args...)
	b, _ := countedMount(t, c, args...)

	blocks := filepath.Join(shared, "blocks")
	var (
		wg        sync.WaitGroup
		stop      = make(chan struct{})
		maxUsed   int64   // du of the directory
		maxLedger float64 // the cache's own account (shared by all processes)
		mu        sync.Mutex
	)
	wg.Go(func() { // watch the budget while the readers run
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			u := duLocked(blocks)
			l := diskUsed(a)
			mu.Lock()
			maxUsed = max(maxUsed, u)
			maxLedger = max(maxLedger, l)
			mu.Unlock()
		}
	})
	// The prefetch process fills the same directory (standalone: no mount
	// involved) while the mounts read.
	prefetchErr := make(chan error, 1)
	wg.Go(func() {
		var err error
		for round := 0; err == nil; round++ {
			select {
			case <-stop:
				prefetchErr <- nil
				return
			default:
			}
			k := round % nFiles
			r := runBlobfs(t, a.env, "prefetch", "--container", c, "--endpoint", az.BlobEndpoint(),
				"--cache-dir", shared, "--cache-size-mb", fmt.Sprint(budgetMB), "--cache-mem-mb", "1",
				"--progress-interval", "1h", fmt.Sprintf("f%02d.bin", k), fmt.Sprintf("f%02d.bin", (k+1)%nFiles))
			if r.code != 0 {
				err = fmt.Errorf("blobfs prefetch (standalone) on the shared cache dir: %s", r)
			}
		}
		prefetchErr <- err
	})
	rounds := testenv.Pick(3, 6)
	err := parallelDo(4*rounds, 4, func(i int) error {
		m := []*mount{a, b}[i%2]
		rng := rand.New(rand.NewPCG(uint64(i), 77))
		for range nFiles {
			k := rng.IntN(nFiles)
			p := m.Path(fmt.Sprintf("f%02d.bin", k))
			fh, err := os.Open(p)
			if err != nil {
				return err
			}
			// Mix whole sequential reads and random 64 KiB reads.
			if rng.IntN(2) == 0 {
				got, err := io.ReadAll(fh)
				fh.Close()
				if err != nil {
					return fmt.Errorf("read %s: %w", p, err)
				}
				if !bytes.Equal(got, files[k]) {
					return fmt.Errorf("%s: wrong bytes (first difference at %d)", p, firstDiff(got, files[k]))
				}
			} else {
				buf := make([]byte, 64<<10)
				for range 16 {
					off := rng.Int64N(fileSize - int64(len(buf)))
					if _, err := fh.ReadAt(buf, off); err != nil {
						fh.Close()
						return fmt.Errorf("read %s at %d: %w", p, off, err)
					}
					if !bytes.Equal(buf, files[k][off:off+int64(len(buf))]) {
						fh.Close()
						return fmt.Errorf("%s at %d: wrong bytes", p, off)
					}
				}
				fh.Close()
			}
			dropPageCacheQuiet(p)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-prefetchErr; err != nil {
		t.Fatal(err)
	}
	budget := int64(budgetMB) << 20
	// The ledger (what every process charges before it writes) must never
	// pass the budget. du may see a little more: the file system's own
	// extent blocks, and a walk that is not atomic (an evicted block
	// counted before its eviction, an admitted one after its admission).
	if maxLedger > float64(budget) || maxLedger == 0 {
		t.Errorf("the cache's ledger reached %v bytes, budget %d", maxLedger, budget)
	}
	if slack := int64(blockBytes); maxUsed > budget+slack {
		t.Errorf("the shared cache directory held up to %d bytes, over its %d budget (+%d slack)", maxUsed, budget, slack)
	}
	if used := du(t, blocks); used > budget+blockBytes {
		t.Errorf("the shared cache directory holds %d bytes, over its %d budget", used, budget)
	}
	t.Logf("shared cache: ledger at most %.0f, du at most %d, budget %d", maxLedger, maxUsed, budget)
}

func dropPageCacheQuiet(path string) {
	if f, err := os.Open(path); err == nil {
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
	}
}

// du is the space the files and directories under dir occupy, like du(1).
func du(t *testing.T, dir string) int64 {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	return duQuiet(dir)
}

// duLocked is duQuiet of a cache directory's blob data taken while holding
// the directory's lock (flock on its ledger, as every cache process does
// before it admits or evicts): a consistent snapshot. An unlocked walk is not
// atomic — a block counted before its eviction and another counted after its
// admission — and on a loaded machine it overstated usage by several blocks.
// Bytes being written outside the lock are in blocks already charged to the
// ledger, so the snapshot still bounds what the disk really holds.
func duLocked(dir string) int64 {
	f, err := os.OpenFile(filepath.Join(dir, "ledger"), os.O_RDWR, 0)
	if err != nil {
		return duQuiet(dir)
	}
	defer f.Close()
	for {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != unix.EINTR {
			break
		}
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return duQuiet(dir)
}

func duQuiet(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // removed by a concurrent eviction
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			total += st.Blocks * 512
		}
		return nil
	})
	return total
}

// Kernel side: the page cache outlives a close while the file's ETag is
// unchanged (FOPEN_KEEP_CACHE), also after the attribute TTL, when the
// open revalidates (close-to-open) and finds the same version: the re-read
// reaches neither the daemon nor the backend. (That a changed ETag drops
// it is TestMountCacheOverwriteNeverMixesVersions.)
func TestMountCacheKeepsPageCacheWhileETagUnchanged(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	data := pseudoRandom(1101, 8<<20)
	putBlob(t, newStore(t, c), "weights.bin", data, nil)
	// Long enough that the first half's re-read lands inside it even on a
	// loaded CI machine (1 s was not: the read itself can take that long).
	const ttl = 5 * time.Second
	m, ctr := countedMount(t, c, "--attr-timeout", ttl.String(), "--entry-timeout", ttl.String())
	p := m.Path("weights.bin")
	readWhole(t, p, data)
	settle(ctr)

	// Within the TTL: the page cache answers. Other test processes on the
	// machine drop the page cache system-wide (drop_caches), so one miss
	// can be theirs: the kernel must keep the pages on one of 3 tries.
	var hits, d float64
	for try := 0; try < 3; try++ {
		readWhole(t, p, data) // (re)fill the page cache
		hits = cacheHits(t, m)
		readWhole(t, p, data)
		if d = cacheHits(t, m) - hits; d == 0 {
			break
		}
	}
	if d != 0 {
		t.Fatalf("re-reading within the attribute TTL made %v daemon cache reads on each of 3 tries: the kernel dropped its page cache", d)
	}

	skipBug(t, "after the attribute TTL the kernel sometimes (about 1 run in 3; always when another "+
		"process opened the file after the TTL) drops an unchanged file's pages although fileNode.Open "+
		"answered FOPEN_KEEP_CACHE and size, mtime and ETag are unchanged; within the TTL it never does. "+
		"Not caused by CAP_AUTO_INVAL_DATA (ExplicitDataCacheControl did not change it)")
	time.Sleep(ttl + 500*time.Millisecond) // past the attribute TTL: the next open revalidates
	ctr.Reset()
	hits = cacheHits(t, m)
	readWhole(t, p, data)
	got := settle(ctr)
	if got.Reads != 0 {
		t.Fatalf("re-reading an unchanged file fetched from the backend: %v", got)
	}
	if got.Requests == 0 {
		t.Errorf("the open after the attribute TTL did not revalidate with the backend (close-to-open): %v", got)
	}
	if d := cacheHits(t, m) - hits; d != 0 {
		t.Fatalf("re-reading an unchanged file after the TTL made %v daemon cache reads: the kernel dropped its page cache", d)
	}
}

// A second pass over a file whose blocks were evicted in between (the next
// epoch over a dataset larger than the cache) is read ahead like the
// first: a few large GETs, not one per 1 MiB block. (The stream of the
// first pass used to keep its head at the end of the file, and the second
// pass ran on demand misses alone.)
func TestMountCacheSecondPassReadsAhead(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	const size = 48 << 20
	data := pseudoRandom(1201, size)
	putBlob(t, newStore(t, c), "epoch.bin", data, nil)
	m, ctr := countedMount(t, c)
	p := m.Path("epoch.bin")
	for pass := 1; pass <= 2; pass++ {
		if pass == 2 {
			if r := prefetchCmd(t, m, "--evict", p); r.code != 0 {
				t.Fatalf("--evict: %s", r)
			}
		}
		dropPageCache(t, p)
		settle(ctr)
		ctr.Reset()
		readWhole(t, p, data)
		got := settle(ctr)
		t.Logf("pass %d: %v", pass, got)
		if got.ReadBytes < size {
			t.Fatalf("pass %d pulled %d of %d bytes: the eviction did not take", pass, got.ReadBytes, size)
		}
		// 1 MiB blocks: per-block misses would be 48 GETs; readahead
		// fetches 8 MiB runs.
		if got.Reads > size>>20/2 {
			t.Errorf("pass %d: %d GETs for %d MiB: not read ahead", pass, got.Reads, size>>20)
		}
	}
}
