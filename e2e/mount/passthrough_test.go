package mounte2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
	// No fetch at open: the cold read below goes through the daemon
	// (TestMountColdOpenFetchesWholeAndGetsPassthrough has the default).
	m, ctr := countedMount(t, c, "--read-only", "--cache-size-mb", strconv.Itoa(budgetMB), "--fetch-at-open-mb", "0")
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

// An open of a file that a warm-up (blobfs prefetch) is fetching whole
// waits for the fetch and is handed to the kernel, rather than reading the
// file through the daemon while the bytes arrive (#9). A file already open
// through the daemon is not waited for: the kernel would not mix.
func TestMountOpenWaitsForAWarmUpAndGetsPassthrough(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	// One 8 MiB block each: once a file's read reaches the backend, every
	// missing block of it is in flight.
	data, other := pseudoRandom(1401, 8<<20), pseudoRandom(1402, 8<<20)
	s := newStore(t, c)
	putBlob(t, s, "warm/shard.bin", data, nil)
	putBlob(t, s, "warm/open.bin", other, nil)
	// No fetch at open: q's first open below must go through the daemon.
	m, ctr := countedMount(t, c, "--read-only", "--auto-prefetch-shards", "0", "--fetch-at-open-mb", "0")
	p, q := m.Path("warm/shard.bin"), m.Path("warm/open.bin")
	// Open q through the daemon before anything is fetched; it stays open.
	plain, err := os.Open(q)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	opens := backingOpens(t, m)
	release := ctr.Hold(func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/warm/") })
	defer release()
	reads := ctr.Counts().Reads

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	warm := exec.CommandContext(ctx, blobfsBin, "prefetch", p, q)
	warm.Env, warm.Dir = m.env, tmpRoot
	var warmOut bytes.Buffer
	warm.Stdout, warm.Stderr = &warmOut, &warmOut
	if err := warm.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the warm-up's two reads held at the backend", func() error {
		if n := ctr.Counts().Reads - reads; n < 2 {
			return fmt.Errorf("%d reads", n)
		}
		return nil
	})

	type opened struct {
		f   *os.File
		err error
	}
	openAsync := func(path string) chan opened {
		done := make(chan opened, 1)
		go func() {
			f, err := os.Open(path)
			done <- opened{f, err}
		}()
		return done
	}
	select {
	case o := <-openAsync(q):
		if o.err != nil {
			t.Fatal(o.err)
		}
		o.f.Close()
	case <-time.After(1500 * time.Millisecond): // the daemon waits up to 2 s for a fetch
		t.Fatal("an open of a file open through the daemon waited for the warm-up's held fetch")
	}

	done := openAsync(p)
	select {
	case o := <-done:
		if o.f != nil {
			o.f.Close()
		}
		t.Fatalf("open returned (%v) while the warm-up's fetch of the whole file was held; want it to wait", o.err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	defer o.f.Close()
	readOpen(t, o.f, data)
	if err := warm.Wait(); err != nil {
		t.Fatalf("blobfs prefetch: %v\n%s", err, warmOut.String())
	}
	if got := backingOpens(t, m) - opens; got != 1 {
		t.Errorf("%v opens handed to the kernel, want 1: the open that waited", got)
	}
	if waits, err := metricSum(m, "blobfs_cache_backing_waits_total "); err != nil || waits != 1 {
		t.Errorf("blobfs_cache_backing_waits_total = %v (%v), want 1", waits, err)
	}
}

// A warm-up (blobfs prefetch) does not wait on a file a reader is already
// fetching: it leaves those blocks to the reader and finishes, while the
// reader's fetch is still held at the backend, and the reader still gets
// every byte (#9, cache.FillOptions.LeaveJoined).
func TestMountWarmUpLeavesAReadersFetchToTheReader(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	data := pseudoRandom(1403, 8<<20)
	putBlob(t, newStore(t, c), "busy/shard.bin", data, nil)
	m, ctr := countedMount(t, c, "--read-only", "--auto-prefetch-shards", "0")
	p := m.Path("busy/shard.bin")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	release := ctr.Hold(func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/busy/") })
	defer release()
	reads := ctr.Counts().Reads
	read := make(chan error, 1)
	go func() {
		got, err := os.ReadFile(p)
		if err == nil && !bytes.Equal(got, data) {
			err = fmt.Errorf("read %d bytes that differ from the %d written", len(got), len(data))
		}
		read <- err
	}()
	eventually(t, "the reader's fetch held at the backend", func() error {
		if n := ctr.Counts().Reads - reads; n < 1 {
			return fmt.Errorf("%d reads", n)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	warm := exec.CommandContext(ctx, blobfsBin, "prefetch", p)
	warm.Env, warm.Dir = m.env, tmpRoot
	out, err := warm.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("blobfs prefetch waited on the reader's held fetch (killed after 15 s)\n%s", out)
	}
	if err != nil {
		t.Fatalf("blobfs prefetch: %v\n%s", err, out)
	}
	if n := ctr.Counts().Reads - reads; n != 1 {
		t.Errorf("%d blob reads, want the reader's 1: the warm-up fetched the file again", n)
	}
	release()
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

// A cold open of a shard-sized file on a read-only mount fetches it whole,
// in 8 MiB reads side by side, and is handed to the kernel: no byte of it
// passes through the daemon's FUSE replies (#9, --fetch-at-open-mb). With
// --fetch-at-open-mb 0 the same open streams through the daemon.
func TestMountColdOpenFetchesWholeAndGetsPassthrough(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	data := pseudoRandom(1404, 20<<20+123) // three 8 MiB reads
	putBlob(t, newStore(t, c), "cold/shard.bin", data, nil)

	for _, tc := range []struct {
		args              []string
		wantPass, wantGET float64
	}{
		{nil, 1, 3},
		{[]string{"--fetch-at-open-mb", "0"}, 0, -1},
	} {
		m, ctr := countedMount(t, c, append([]string{"--read-only", "--auto-prefetch-shards", "0"}, tc.args...)...)
		p := m.Path("cold/shard.bin")
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
		opens, reads := backingOpens(t, m), ctr.Counts().Reads
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		readOpen(t, f, data)
		f.Close()
		if got := backingOpens(t, m) - opens; got != tc.wantPass {
			t.Errorf("%v: %v opens handed to the kernel, want %v", tc.args, got, tc.wantPass)
		}
		if got := float64(ctr.Counts().Reads - reads); tc.wantGET >= 0 && got != tc.wantGET {
			t.Errorf("%v: %v blob reads, want %v", tc.args, got, tc.wantGET)
		}
		m.unmount(t)
	}
}
