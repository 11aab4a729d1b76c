package mounte2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/testenv"
)

// FUSE passthrough (#5): a file the node cache holds whole is handed to
// the kernel at open, and its reads never reach the daemon.

// backingOpens is the daemon's count of opens handed to the kernel.
func backingOpens(t *testing.T, m *mount) float64 {
	t.Helper()
	v, err := metricSum(m, "blobfs_fuse_passthrough_opens_total ")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readOpen reads all of f from offset 0 and compares it with want.
func readOpen(t *testing.T, f *os.File, want []byte) {
	t.Helper()
	got, err := io.ReadAll(io.NewSectionReader(f, 0, int64(len(want))+1))
	if err != nil {
		t.Fatalf("read %s: %v", f.Name(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %s: %d bytes that differ from the %d written (first difference at %d)", f.Name(), len(got), len(want), firstDiff(got, want))
	}
}

func TestMountPassthroughReadsBypassTheDaemon(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	size := testenv.Pick(24, 256) << 20
	data := pseudoRandom(1301, size)
	scan := pseudoRandom(1302, 32<<20)
	s := newStore(t, c)
	putBlob(t, s, "train/shard-0.bin", data, nil)
	small := pseudoRandom(1304, 4<<20)
	putBlob(t, s, "eval/holdout.bin", small, nil)
	for _, n := range []string{"a", "b", "c"} {
		putBlob(t, s, "scan/"+n+".bin", scan, nil)
	}
	// Room for the shard and a scan file and a half: the scan below evicts.
	budgetMB := size>>20 + 48
	m, ctr := countedMount(t, c, "--read-only", "--cache-size-mb", strconv.Itoa(budgetMB))
	p := m.Path("train/shard-0.bin")

	// Cold: served by the daemon (not cached yet), which stores and
	// thereby verifies every block.
	readWhole(t, p, data)
	settle(ctr)
	if got := backingOpens(t, m); got != 0 {
		t.Fatalf("a cold open was handed to the kernel (%v backing opens)", got)
	}

	// Warm: the open is passthrough, and the read makes no daemon cache
	// read and no backend request.
	dropPageCache(t, p)
	ctr.Reset()
	hits, opens := cacheHits(t, m), backingOpens(t, m) // dropPageCache's open was one
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readOpen(t, f, data)
	if got := backingOpens(t, m) - opens; got != 1 {
		t.Fatalf("warm open: %v backing opens, want 1", got)
	}
	if d := cacheHits(t, m) - hits; d != 0 {
		t.Fatalf("a passthrough read made %v daemon cache reads: it went through the daemon", d)
	}
	if got := settle(ctr); got.Reads != 0 {
		t.Fatalf("a passthrough read fetched from the backend: %v", got)
	}

	// Evictions while the file is open leave its blocks alone: the
	// kernel reads the cache's file directly, and a punched block would
	// read as zeros.
	ev0, _ := metricSum(m, "blobfs_cache_evictions_total ")
	for _, n := range []string{"a", "b", "c"} {
		readWhole(t, m.Path("scan/"+n+".bin"), scan)
	}
	if ev, _ := metricSum(m, "blobfs_cache_evictions_total "); ev == ev0 {
		t.Fatalf("the scan of 3 × 32 MiB through a %d MiB cache evicted nothing: the test proves nothing", budgetMB)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	readOpen(t, f, data)
	f.Close()

	// A file open through the daemon (plain) keeps later opens plain: the
	// kernel fails an open that mixes the two modes with EIO. holdout.bin
	// is read whole through its first (cold, plain) handle, so by the second
	// open it is cached and verified, and only the open plain handle
	// keeps the second one plain.
	q := m.Path("eval/holdout.bin")
	first, err := os.Open(q)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	readOpen(t, first, small)
	eventually(t, "holdout.bin cached whole", func() error {
		if r := prefetchCmd(t, m, "--check", q); r.code != 0 {
			return fmt.Errorf("prefetch --check: %s", r)
		}
		return nil
	})
	opens = backingOpens(t, m)
	second, err := os.Open(q)
	if err != nil {
		t.Fatalf("second open of a file open once: %v", err)
	}
	readOpen(t, second, small)
	second.Close()
	if got := backingOpens(t, m) - opens; got != 0 {
		t.Fatalf("an open beside a plain handle was handed to the kernel (%v)", got)
	}
	first.Close()
}

// On a writable mount with --passthrough on, opening a file for writing
// while it is open for passthrough reads fails with ETXTBSY (the kernel
// would send the writes to the cache's file); once the readers are gone
// the write goes to Blob as usual.
func TestMountPassthroughRefusesWritersWhileOpen(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	data := pseudoRandom(1303, 4<<20)
	s := newStore(t, c)
	putBlob(t, s, "model.bin", data, nil)
	m, _ := countedMount(t, c, "--passthrough", "on")
	p := m.Path("model.bin")
	readWhole(t, p, data)
	settle0 := backingOpens(t, m)

	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := backingOpens(t, m); got != settle0+1 {
		r.Close()
		t.Fatalf("warm open on a --passthrough on mount: %v backing opens, want %v", got, settle0+1)
	}
	for _, flags := range []int{os.O_WRONLY, os.O_WRONLY | os.O_TRUNC} {
		_, err = os.OpenFile(p, flags, 0)
		if !errors.Is(err, syscall.ETXTBSY) {
			r.Close()
			t.Fatalf("write open (flags %#x) while open for passthrough reads: %v, want ETXTBSY", flags, err)
		}
	}
	// The refused O_TRUNC truncated nothing, locally or in Blob.
	if _, got := readBlob(t, s, "model.bin"); !bytes.Equal(got, data) {
		t.Fatalf("blob after a refused O_TRUNC open: %d bytes, want the %d written", len(got), len(data))
	}
	readOpen(t, r, data)
	r.Close()

	// The passthrough reader is gone (its release is asynchronous: retry
	// briefly rather than race it).
	var w *os.File
	eventually(t, "write open after the reader closed", func() error {
		w, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		return err
	})
	if _, err := w.Write([]byte("new content")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, got := readBlob(t, s, "model.bin"); string(got) != "new content" {
		t.Fatalf("blob after the write: %q", got[:min(len(got), 32)])
	}
	readWhole(t, p, []byte("new content"))
}
