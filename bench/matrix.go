//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
)

// The benchmark matrix (#5), beyond the original four workloads:
// every workload runs -trials times (a fresh mount and cache directory for
// every cold trial, the page cache dropped before every trial) and reports
// the median; the mounts' daemon CPU-seconds per GiB read and peak RSS are
// measured on the cold sequential trials.

// matrix holds every workload of a run, in table order.
type matrix struct {
	seqCold, seqWarm, seq4Cold, seq4Warm *workload
	rand4k, rand1m, small                *workload
	lsCold, lsWarm, ttfb                 *workload
}

func newMatrix(sz sizes, workers int) *matrix {
	w := func(name, unit string) *workload {
		return &workload{Name: name, Unit: unit, Results: map[string]result{}}
	}
	seqReader, seq4Reader := "fio read bs=1M psync, buffered", "fio numjobs=4, aggregate"
	if !haveFio {
		seqReader, seq4Reader = "1 MiB read(2) calls, buffered; no fio", "aggregate; no fio"
	}
	m := &matrix{
		seqCold:  w(fmt.Sprintf("1. cold sequential read, one %s file, 1 reader (%s)", human(sz.LargeBytes), seqReader), "MB/s"),
		seqWarm:  w("2. warm sequential re-read, 1 reader (node/vfs cache; page cache dropped)", "MB/s"),
		seq4Cold: w(fmt.Sprintf("3. cold sequential read of the same %s file by 4 readers at once (%s)", human(sz.LargeBytes), seq4Reader), "MB/s"),
		seq4Warm: w("4. warm sequential re-read, 4 readers (page cache dropped)", "MB/s"),
		rand4k:   w(fmt.Sprintf("5. cold random 4 KiB reads (fio randread bs=4k direct=1 psync, %ds)", sz.RandSecs), "IOPS"),
		rand1m:   w(fmt.Sprintf("6. cold random 1 MiB reads (fio randread bs=1M direct=1 psync, %ds)", sz.RandSecs), "MB/s"),
		small:    w(fmt.Sprintf("7. %d × %s files open+read+close once, cold (%d parallel readers)", sz.SmallFiles, human(sz.SmallBytes), workers), "MB/s"),
		lsCold:   w(fmt.Sprintf("8. `ls -l` of a directory of %d entries, cold (fresh mount)", sz.ListEntries), "entries/s"),
		lsWarm:   w(fmt.Sprintf("9. `ls -l` of the %d entries again, warm (same mount, dentries dropped)", sz.ListEntries), "entries/s"),
		ttfb:     w("10. time to first byte: open + 4 KiB read of a cold file on a fresh mount", "ms"),
	}
	m.ttfb.LowerBetter = true
	return m
}

func (m *matrix) all() []*workload {
	return []*workload{m.seqCold, m.seqWarm, m.seq4Cold, m.seq4Warm, m.rand4k, m.rand1m, m.small, m.lsCold, m.lsWarm, m.ttfb}
}

// trial runs f n times and returns the median result, with every trial's
// value in the note; a failed trial fails the result.
func trial(n int, f func() result) result {
	var vals []float64
	var last result
	for range n {
		r := f()
		if r.Err != "" {
			return r
		}
		vals = append(vals, r.Value)
		last = r
	}
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	last.Value = sorted[len(sorted)/2]
	var ts []string
	for _, v := range vals {
		ts = append(ts, strconv.FormatFloat(v, 'f', 0, 64))
	}
	return withNote(result{Value: last.Value, Note: fmt.Sprintf("median of %d: %s", n, strings.Join(ts, ", "))}, last.Note)
}

// selected reports whether -only lets workload number k (1-based, table
// order) run.
func selected(k int) bool {
	if *flagOnly == "" {
		return true
	}
	for _, f := range strings.Split(*flagOnly, ",") {
		if strings.TrimSpace(f) == strconv.Itoa(k) {
			return true
		}
	}
	return false
}

// skipUnselected blanks the workloads -only leaves out, after they ran:
// cold and warm trials share mounts, so a pair runs when either is chosen.
func (m *matrix) skipUnselected() {
	for i, w := range m.all() {
		if !selected(i + 1) {
			w.Results = map[string]result{}
		}
	}
}

// runMatrix runs every workload -only selects for one peer.
func (e *env) runMatrix(ctx context.Context, p string, m *matrix, n int) {
	defer m.skipUnselected()
	large := e.large
	switch p {
	case peerSDK:
		run := func(k int, w *workload, f func() result) {
			if selected(k) {
				w.Results[p] = f()
			}
		}
		run(1, m.seqCold, func() result { return trial(n, func() result { return e.sdkSeq(ctx) }) })
		run(2, m.seqWarm, func() result {
			return withNote(trial(n, func() result { return e.sdkSeq(ctx) }), "no cache: a second download")
		})
		run(3, m.seq4Cold, func() result { return trial(n, func() result { return e.sdkSeqN(ctx, 4) }) })
		run(4, m.seq4Warm, func() result {
			return withNote(trial(n, func() result { return e.sdkSeqN(ctx, 4) }), "no cache: downloads again")
		})
		run(5, m.rand4k, func() result { return trial(n, func() result { return e.sdkRand(ctx, 4096) }) })
		run(6, m.rand1m, func() result { return trial(n, func() result { return e.sdkRand(ctx, 1<<20) }) })
		run(7, m.small, func() result { return trial(n, func() result { return e.sdkSmall(ctx) }) })
		run(8, m.lsCold, func() result { return trial(n, func() result { return e.sdkList(ctx) }) })
		run(9, m.lsWarm, func() result {
			return withNote(trial(n, func() result { return e.sdkList(ctx) }), "no cache: lists again")
		})
		run(10, m.ttfb, func() result { return trial(n, func() result { return e.sdkTTFB(ctx) }) })
		return
	case peerLocal:
		root := e.localDir
		// Every local trial is cold: the page cache is dropped first.
		run := func(k int, w *workload, note string, f func() result) {
			if selected(k) {
				w.Results[p] = withNote(trial(n, func() result { dropCaches(); return f() }), note)
			}
		}
		seq := func(readers int) func() result {
			return func() result { return fioSeq(filepath.Join(root, large), e.sz.LargeBytes, readers) }
		}
		ls := func() result { return lsL(filepath.Join(root, e.listDir), e.sz.ListEntries) }
		run(1, m.seqCold, "", seq(1))
		run(2, m.seqWarm, "same as cold: page cache dropped", seq(1))
		run(3, m.seq4Cold, "", seq(4))
		run(4, m.seq4Warm, "same as cold", seq(4))
		run(5, m.rand4k, "", func() result { return fioRand(filepath.Join(root, large), e.sz.RandSecs, "4k", true) })
		run(6, m.rand1m, "", func() result { return fioRand(filepath.Join(root, large), e.sz.RandSecs, "1M", true) })
		run(7, m.small, "", func() result { return readFiles(root, e.small, *flagWorkers) })
		run(8, m.lsCold, "", ls)
		run(9, m.lsWarm, "same as cold", ls)
		run(10, m.ttfb, "", func() result { return ttfb(filepath.Join(root, large)) })
		return
	}
	// Mounts: a fresh mount (and cache directory) for every cold trial.
	withMount := func(f func(mt *mounted) result) result {
		mt, err := e.mount(ctx, p)
		if err != nil {
			return result{Err: err.Error()}
		}
		defer mt.unmount()
		return f(mt)
	}
	// seqPair runs a cold and then a warm sequential read with readers
	// readers on one mount, n times; the cold trials also measure the
	// daemon's CPU and peak RSS.
	seqPair := func(readers int, cold, warm *workload) {
		if !selected(workloadNumber(m, cold)) && !selected(workloadNumber(m, warm)) {
			return
		}
		var warms []result
		cold.Results[p] = trial(n, func() result {
			return withMount(func(mt *mounted) result {
				path := filepath.Join(mt.dir, large)
				dropCaches()
				before, cpu0 := mt.scrape(), mt.cpuSeconds()
				stopProfile := mt.startProfile(fmt.Sprintf("seq%d-cold", readers))
				r := fioSeq(path, e.sz.LargeBytes, readers)
				stopProfile()
				cpu := mt.cpuSeconds() - cpu0
				if r.Err == "" {
					r = withNote(r, mt.getStats(before))
					if cpu >= 0 {
						// Per GiB delivered to the readers (each reads the whole file).
						gib := float64(readers) * float64(e.sz.LargeBytes) / (1 << 30)
						r = withNote(r, fmt.Sprintf("daemon %.2f CPU-s/GiB read, peak RSS %s", cpu/gib, human(mt.peakRSS())))
					}
				}
				if p == peerRclone {
					// rclone writes its vfs cache in the background; let it
					// settle so the second epoch reads its cache.
					time.Sleep(2 * time.Second)
				}
				dropCaches()
				before = mt.scrape()
				stopProfile = mt.startProfile(fmt.Sprintf("seq%d-warm", readers))
				w := fioSeq(path, e.sz.LargeBytes, readers)
				stopProfile()
				warms = append(warms, withNote(w, mt.getStats(before)))
				return r
			})
		})
		i := 0
		warm.Results[p] = trial(len(warms), func() result { r := warms[i]; i++; return r })
	}
	seqPair(1, m.seqCold, m.seqWarm)
	seqPair(4, m.seq4Cold, m.seq4Warm)
	randTrial := func(bs string) result {
		return withMount(func(mt *mounted) result {
			dropCaches()
			before := mt.scrape()
			r := fioRand(filepath.Join(mt.dir, large), e.sz.RandSecs, bs, true)
			if r.Err != "" && strings.Contains(r.Err, "nvalid argument") {
				r = withNote(fioRand(filepath.Join(mt.dir, large), e.sz.RandSecs, bs, false), "O_DIRECT refused: buffered")
			}
			return withNote(r, mt.getStats(before))
		})
	}
	if selected(5) {
		m.rand4k.Results[p] = trial(n, func() result { return randTrial("4k") })
	}
	if selected(6) {
		m.rand1m.Results[p] = trial(n, func() result { return randTrial("1M") })
	}
	if !selected(7) && !selected(8) && !selected(9) && !selected(10) {
		return
	}
	m.small.Results[p] = trial(n, func() result {
		return withMount(func(mt *mounted) result {
			dropCaches()
			before := mt.scrape()
			return withNote(readFiles(mt.dir, e.small, *flagWorkers), mt.getStats(before))
		})
	})
	var warmLs []result
	m.lsCold.Results[p] = trial(n, func() result {
		return withMount(func(mt *mounted) result {
			dir := filepath.Join(mt.dir, e.listDir)
			dropCaches()
			before := mt.scrape()
			r := withNote(lsL(dir, e.sz.ListEntries), mt.getStats(before))
			dropCaches()
			before = mt.scrape()
			warmLs = append(warmLs, withNote(lsL(dir, e.sz.ListEntries), mt.getStats(before)))
			return r
		})
	})
	i := 0
	m.lsWarm.Results[p] = trial(len(warmLs), func() result { r := warmLs[i]; i++; return r })
	m.ttfb.Results[p] = trial(n, func() result {
		return withMount(func(mt *mounted) result {
			dropCaches()
			return ttfb(filepath.Join(mt.dir, large))
		})
	})
}

// lsL times `ls -l dir` (every entry listed and stat'ed).
func lsL(dir string, want int) result {
	t0 := time.Now()
	cmd := exec.Command("ls", "-l", "--", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{Err: err.Error()}
	}
	if err := startChild(cmd); err != nil {
		return result{Err: err.Error()}
	}
	lines := 0
	buf := make([]byte, 1<<16)
	for {
		k, err := out.Read(buf)
		for _, c := range buf[:k] {
			if c == '\n' {
				lines++
			}
		}
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	endChild(cmd)
	el := time.Since(t0)
	if err != nil {
		return result{Err: fmt.Sprintf("ls -l: %v", err)}
	}
	if got := lines - 1; got != want { // the "total" line
		return result{Err: fmt.Sprintf("ls -l listed %d entries, want %d", got, want)}
	}
	return result{Value: float64(want) / el.Seconds(), Note: fmt.Sprintf("%.2f s", el.Seconds())}
}

// ttfb times opening path and reading its first 4 KiB.
func ttfb(path string) result {
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return result{Err: err.Error()}
	}
	buf := make([]byte, 4096)
	_, err = io.ReadFull(f, buf)
	el := time.Since(t0)
	f.Close()
	if err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: float64(el.Microseconds()) / 1000}
}

// sdkSeqN downloads the large blob readers times at once, each with
// parallel 8 MiB ranges: the backend ceiling for several readers.
func (e *env) sdkSeqN(ctx context.Context, readers int) result {
	var wg sync.WaitGroup
	errs := make([]error, readers)
	t0 := time.Now()
	for i := range readers {
		wg.Go(func() {
			buf := make([]byte, e.sz.LargeBytes)
			_, errs[i] = e.client.DownloadBuffer(ctx, container, e.large, buf, &azblob.DownloadBufferOptions{BlockSize: 8 << 20, Concurrency: 16})
		})
	}
	wg.Wait()
	el := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return result{Err: err.Error()}
		}
	}
	return result{Value: float64(readers) * float64(e.sz.LargeBytes) / el.Seconds() / 1e6, Note: fmt.Sprintf("%d × DownloadBuffer 8 MiB × 16", readers)}
}

// sdkList lists the listing directory (all pages) and reads every entry's
// properties from the listing: what `ls -l` needs from the service.
func (e *env) sdkList(ctx context.Context) result {
	t0 := time.Now()
	prefix := e.listDir + "/"
	pager := e.client.NewListBlobsFlatPager(container, &azblob.ListBlobsFlatOptions{Prefix: &prefix})
	n := 0
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return result{Err: err.Error()}
		}
		n += len(page.Segment.BlobItems)
	}
	el := time.Since(t0)
	if n != e.sz.ListEntries {
		return result{Err: fmt.Sprintf("listed %d blobs, want %d", n, e.sz.ListEntries)}
	}
	return result{Value: float64(n) / el.Seconds(), Note: fmt.Sprintf("%.2f s, flat listing pages", el.Seconds())}
}

// sdkTTFB times one 4 KiB ranged GET of the large blob.
func (e *env) sdkTTFB(ctx context.Context) result {
	bc := e.client.ServiceClient().NewContainerClient(container).NewBlobClient(e.large)
	t0 := time.Now()
	resp, err := bc.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: 0, Count: 4096}})
	if err != nil {
		return result{Err: err.Error()}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: float64(time.Since(t0).Microseconds()) / 1000, Note: "one ranged GET"}
}

// seedListing creates the listing directory: ListEntries empty blobs (and
// the same number of empty local files).
func (e *env) seedListing(ctx context.Context) error {
	e.listDir = "listing"
	local := filepath.Join(e.localDir, e.listDir)
	if err := os.MkdirAll(local, 0o755); err != nil {
		return err
	}
	names := make(chan string)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for n := range names {
				_, err := e.client.UploadBuffer(ctx, container, n, nil, nil)
				if err != nil {
					select {
					case errc <- fmt.Errorf("upload %s: %w", n, err):
					default:
					}
				}
			}
		})
	}
	for i := range e.sz.ListEntries {
		name := fmt.Sprintf("%s/entry-%06d", e.listDir, i)
		if err := os.WriteFile(filepath.Join(e.localDir, name), nil, 0o644); err != nil {
			close(names)
			wg.Wait()
			return err
		}
		names <- name
	}
	close(names)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

// cpuSeconds is the daemon's user+system CPU time so far; -1 if unknown.
func (m *mounted) cpuSeconds() float64 {
	if m.pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // utime, field 14
	st, _ := strconv.ParseFloat(f[12], 64) // stime, field 15
	return (ut + st) / 100                 // USER_HZ
}

// peakRSS is the daemon's peak resident set (VmHWM).
func (m *mounted) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// workloadNumber is w's 1-based number in table order.
func workloadNumber(m *matrix, w *workload) int {
	return slices.Index(m.all(), w) + 1
}

// startProfile starts a CPU profile of a blobfs daemon (-pprof-dir) and
// returns the function that ends it and writes <pprof-dir>/<name>-N.pprof.
// The daemon's profiler runs for a fixed time, so the profile is taken in
// one-second pieces until stopped, and the pieces are kept in order.
func (m *mounted) startProfile(name string) (stop func()) {
	if *flagPprofDir == "" || m.peer != peerBlobfs || m.metricsAddr == "" {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			resp, err := http.Get("http://" + m.metricsAddr + "/debug/pprof/profile?seconds=1")
			if err != nil {
				logf("pprof: %v", err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				logf("pprof: %s %v", resp.Status, err)
				return
			}
			_ = os.MkdirAll(*flagPprofDir, 0o755)
			f := filepath.Join(*flagPprofDir, fmt.Sprintf("%s-%d-%02d.pprof", name, m.pid, i))
			if err := os.WriteFile(f, body, 0o644); err != nil {
				logf("pprof: %v", err)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}
