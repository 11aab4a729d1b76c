package mounte2e

import (
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// A job that opens the files of a directory without listing it (a data
// loader reading names from an index) pays a HEAD for the first two
// files only: the second miss lists the directory once, and the listing
// answers every later lookup, a missing name included.
func TestMountLookupMissesListTheDirectoryOnce(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	const files = 40
	want := map[string][]byte{}
	for i := range files {
		want[fmt.Sprintf("train/%03d.jpg", i)] = pseudoRandom(uint64(1400+i), 4096)
	}
	putFiles(t, s, want)
	m, ctr := countedMount(t, c, "--read-only")
	settle(ctr)
	for i := range 2 {
		name := fmt.Sprintf("train/%03d.jpg", i)
		readWhole(t, m.Path(name), want[name])
	}
	settle(ctr) // the background listing has landed
	ctr.Reset()
	for i := 2; i < files; i++ {
		name := fmt.Sprintf("train/%03d.jpg", i)
		readWhole(t, m.Path(name), want[name])
	}
	if _, err := os.Stat(m.Path("train/missing.jpg")); !os.IsNotExist(err) {
		t.Fatalf("stat of a missing name: %v, want not exist", err)
	}
	got := settle(ctr)
	if got.ByMethod["HEAD"] != 0 {
		t.Fatalf("%d HEADs for %d lookups after the directory was listed: %v", got.ByMethod["HEAD"], files-1, got)
	}
	if got.Reads != files-2 {
		t.Errorf("%d blob reads for %d files: %v", got.Reads, files-2, got)
	}
}

// A file's first small read on a fresh mount (open, read a header) fetches
// its own block and nothing else: readahead would compete with it for the
// time to first byte. (A file up to --fetch-at-open-mb is fetched whole at
// its open instead, for passthrough; this is the read path beyond it.)
func TestMountFirstSmallReadFetchesOneBlock(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	data := pseudoRandom(1410, 64<<20)
	putBlob(t, newStore(t, c), "weights.bin", data, nil)
	m, ctr := countedMount(t, c, "--read-only", "--fetch-at-open-mb", "0")
	f, err := os.Open(m.Path("weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settle(ctr)
	ctr.Reset()
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(f, buf); err != nil {
		t.Fatal(err)
	}
	if got := settle(ctr); got.Reads != 1 || got.ReadBytes != blockBytes {
		t.Fatalf("first 4 KiB read: %v, want one GET of its %d-byte block", got, blockBytes)
	}
}

// A data loader's workers open their first files all at once on a fresh
// mount: the lookups that miss while the directory's warm-up listing runs
// wait for it, and the reads join fetches that readahead started, so 16
// parallel readers of 64 shards cost at most 2 HEADs (the first miss, and
// the mount's own probe at most) where each open used to cost one, and
// each first read of a prefetched block a Validate.
func TestMountParallelColdOpensSendNoHEADStorm(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	const files, workers = 64, 16
	want := map[string][]byte{}
	var names []string
	for i := range files {
		name := fmt.Sprintf("shards/%03d.tar", i)
		want[name] = pseudoRandom(uint64(1500+i), 2<<20)
		names = append(names, name)
	}
	putFiles(t, s, want)
	m, ctr := countedMount(t, c, "--read-only")
	settle(ctr)
	ctr.Reset()
	jobs := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for name := range jobs {
				readWhole(t, m.Path(name), want[name])
			}
		})
	}
	for _, name := range names {
		jobs <- name
	}
	close(jobs)
	wg.Wait()
	got := settle(ctr)
	if got.ByMethod["HEAD"] > 2 {
		t.Fatalf("%d HEADs for %d files read by %d parallel readers, want at most 2: %v", got.ByMethod["HEAD"], files, workers, got)
	}
}
