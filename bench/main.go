//go:build linux

// Command bench runs blobfs's side-by-side read benchmarks (`make bench`):
// the real `bin/blobfs mount`, `rclone mount --vfs-cache-mode full`, the
// raw azblob SDK (the backend ceiling) and the same files on local disk
// (the cache ceiling), all against one Azurite with the same data in the
// same run. It prints a table per workload with ratios and appends the
// results to BENCHMARKS.md.
//
// It needs root (drop_caches, FUSE mounts), fio, bin/blobfs (make build)
// and rclone (make bench-deps puts it in .tools/bin). BLOBFS_BENCH_SIZE
// picks small (default, a few minutes) or full data sizes.
//
// Everything it starts is torn down on return, on failure and on
// SIGINT/SIGTERM: mounts are unmounted, rclone is killed, Azurite stops.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/mountinfo"
)

const container = "bench"

// sizes are one BLOBFS_BENCH_SIZE setting.
type sizes struct {
	Name       string
	LargeBytes int64 // the sequential / random-read file
	SmallFiles int
	SmallBytes int64
	RandSecs   int
	// ListEntries is the size of the directory `ls -l` lists.
	ListEntries int
}

var sizeSets = map[string]sizes{
	"small": {Name: "small", LargeBytes: 512 << 20, SmallFiles: 1000, SmallBytes: 64 << 10, RandSecs: 10, ListEntries: 10000},
	// The matrix: a 2 GiB file, 10,000 × 64 KiB files, 100,000 entries.
	"full": {Name: "full", LargeBytes: 2 << 30, SmallFiles: 10000, SmallBytes: 64 << 10, RandSecs: 30, ListEntries: 100000},
}

// Peers, in table order.
const (
	peerBlobfs = "blobfs"
	peerRclone = "rclone"
	peerSDK    = "raw-sdk"
	peerLocal  = "local-disk"
)

var peers = []string{peerBlobfs, peerRclone, peerSDK, peerLocal}

// result is one peer's number on one workload.
type result struct {
	Value float64 // MB/s or IOPS; 0 with Err set when it failed
	Err   string
	Note  string
}

type workload struct {
	Name        string
	Unit        string // "MB/s", "IOPS", "entries/s" or "ms"
	LowerBetter bool   // a latency: ratios below 1 favour blobfs
	Results     map[string]result
}

var (
	flagOut        = flag.String("out", "BENCHMARKS.md", "append results to this markdown file (empty: do not)")
	flagBlobfs     = flag.String("blobfs", "bin/blobfs", "blobfs binary (make build)")
	flagRclone     = flag.String("rclone", ".tools/bin/rclone", "rclone binary (make bench-deps); missing: the rclone column is skipped")
	flagWorkDir    = flag.String("workdir", "", "scratch directory (default: a new one under /var/tmp); removed at the end")
	flagTrace      = flag.Bool("trace-ranges", false, "diagnostic: put a recording proxy between blobfs and Azurite and report the HTTP GET range sizes per workload (slows blobfs a little)")
	flagPeers      = flag.String("peers", strings.Join(peers, ","), "comma-separated peers to run")
	flagBlobfsArgs = flag.String("blobfs-args", "", "extra `blobfs mount` arguments, space-separated (e.g. --verify-reads=false)")
	flagWorkers    = flag.Int("small-workers", 8, "parallel readers for the many-small-files workload (a data loader's workers)")
	flagFeed       = flag.Bool("feed", true, "run the GPU-feed benchmark and the checkpoint save/restore cycle")
	flagCheckpoint = flag.Bool("checkpoint", true, "with -feed: also run the checkpoint save/restore cycle")
	flagMatrix     = flag.Bool("matrix", true, "run the read matrix (sequential, random, small files, ls, first byte)")
	flagOnly       = flag.String("only", "", "comma-separated read-matrix workload numbers to run (e.g. 1,2); empty: all")
	flagPprofDir   = flag.String("pprof-dir", "", "diagnostic: write CPU profiles of the blobfs daemon over each sequential trial, cold and warm, into this directory (mounts get --debug-pprof)")
	flagWarmPar    = flag.Int("feed-warmup-parallel", 16, "the GPU feed's `blobfs prefetch --parallel` for the warm-up that races epoch 1")
	flagTrials     = flag.Int("trials", 3, "trials per workload and peer (the median is reported; at least 3 for make bench)")
)

func main() {
	flag.Parse()
	code := 0
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}
	cleanups.run()
	os.Exit(code)
}

// cleanupStack runs registered cleanups once, last first, whether main
// returns or a signal arrives.
type cleanupStack struct {
	mu     sync.Mutex
	fns    []func()
	closed bool // run has started: add runs its function at once
	once   sync.Once
}

var cleanups cleanupStack

func (c *cleanupStack) add(f func()) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		f()
		return
	}
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

// run runs the cleanups; a second caller (main returning while the
// signal handler cleans up) waits until the first is done.
func (c *cleanupStack) run() {
	c.once.Do(func() {
		// Readers first: one holding a file open keeps its mount busy.
		killChildren()
		c.mu.Lock()
		fns := c.fns
		c.fns, c.closed = nil, true
		c.mu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}

// removeWorkDir removes the scratch directory, after making sure nothing
// is mounted below it: RemoveAll must not walk into a live mount.
func removeWorkDir(dir string) {
	for _, mp := range mountsUnder(dir) {
		forceUnmount(mp)
	}
	if left := mountsUnder(dir); len(left) > 0 {
		logf("leaving %s: still mounted: %v", dir, left)
		return
	}
	_ = os.RemoveAll(dir)
}

func mountsUnder(dir string) []string {
	ms, _ := mountinfo.Read()
	var out []string
	for _, m := range ms {
		if strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m.Point)
		}
	}
	return out
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

type env struct {
	sz        sizes
	az        *azurite.Server
	client    *azblob.Client
	work      string
	localDir  string
	blobfsBin string
	rcloneBin string // "" when unavailable
	large     string // blob name of the large file
	small     []string
	listDir   string // the directory `ls -l` lists
	notes     []string
	mountSeq  int
	tracer    *rangeTracer // -trace-ranges
}

func run() error {
	sizeName := os.Getenv("BLOBFS_BENCH_SIZE")
	if sizeName == "" {
		sizeName = "small"
	}
	sz, ok := sizeSets[sizeName]
	if !ok {
		return fmt.Errorf("BLOBFS_BENCH_SIZE=%q: want small or full", sizeName)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it drops the page cache and mounts FUSE filesystems")
	}
	e := &env{sz: sz}
	// The read matrix runs its readers with fio. Where it is missing (a
	// machine that only has the binaries carried to it), the sequential
	// workloads read with goSeq and the random ones are not run.
	noFio := os.Getenv("BLOBFS_BENCH_NO_FIO") != ""
	if _, err := exec.LookPath("fio"); err != nil || noFio {
		if err != nil && *flagMatrix && !noFio {
			return errors.New("needs fio for the read matrix (make deps installs it; BLOBFS_BENCH_NO_FIO=1 runs without it, -matrix=false skips the matrix)")
		}
		haveFio = false
		e.notes = append(e.notes, "fio was not used (not installed, or BLOBFS_BENCH_NO_FIO): sequential workloads read with the bench's own reader (1 MiB read(2) calls per reader, like fio's psync bs=1M), random workloads were not run.")
	}
	var err error
	if e.blobfsBin, err = filepath.Abs(*flagBlobfs); err != nil {
		return err
	}
	if _, err := os.Stat(e.blobfsBin); err != nil {
		return fmt.Errorf("blobfs binary: %w (run make build)", err)
	}
	if p, err := filepath.Abs(*flagRclone); err == nil {
		if _, err := os.Stat(p); err == nil {
			e.rcloneBin = p
		} else if p, err := exec.LookPath("rclone"); err == nil {
			e.rcloneBin = p
		} else {
			logf("rclone not found (%s): skipping its column; make bench-deps installs it", *flagRclone)
			e.notes = append(e.notes, "rclone was not installed: its column is empty.")
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("%v: cleaning up", s)
		cancel()
		cleanups.run()
		os.Exit(130)
	}()

	e.work = *flagWorkDir
	if e.work == "" {
		if e.work, err = os.MkdirTemp("/var/tmp", "blobfs-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(e.work, 0o755); err != nil {
		return err
	}
	work := e.work
	cleanups.add(func() { removeWorkDir(work) })
	e.localDir = filepath.Join(e.work, "local")

	logf("starting Azurite %s", azurite.Version)
	az, err := azurite.Start(ctx, azurite.Options{})
	if err != nil {
		return err
	}
	e.az = az
	cleanups.add(func() { logf("stopping Azurite"); _ = az.Close() })
	cred, err := azblob.NewSharedKeyCredential(az.Account(), az.Key())
	if err != nil {
		return err
	}
	e.client, err = azblob.NewClientWithSharedKeyCredential(az.BlobEndpoint(), cred, &azblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: az.Transport()}, Retry: policy.RetryOptions{MaxRetries: 3}},
	})
	if err != nil {
		return err
	}
	if err := az.CreateContainer(ctx, container); err != nil {
		return err
	}
	if err := e.seed(ctx); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if *flagTrace {
		if e.tracer, err = newRangeTracer(az.BlobEndpoint()); err != nil {
			return err
		}
		e.notes = append(e.notes, "Run with -trace-ranges: blobfs went through a recording HTTP proxy (its numbers are a little lower); 'GETs' in its notes are HTTP requests.")
	}

	if *flagMatrix {
		if err := e.seedListing(ctx); err != nil {
			return fmt.Errorf("seed listing: %w", err)
		}
	}
	mx := newMatrix(sz, *flagWorkers)
	for _, p := range peers {
		if !*flagMatrix {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p == peerRclone && e.rcloneBin == "" || !slices.Contains(strings.Split(*flagPeers, ","), p) {
			continue
		}
		logf("== %s", p)
		e.runMatrix(ctx, p, mx, max(*flagTrials, 1))
	}
	wls := mx.all()

	if err := ctx.Err(); err != nil {
		return err // interrupted: partial results are not recorded
	}
	report := e.render(wls)
	if *flagFeed {
		selected := strings.Split(*flagPeers, ",")
		fz := feedSizeSets[sz.Name]
		fr, err := e.runFeed(ctx, fz, selected)
		if err != nil && ctx.Err() != nil {
			return err
		}
		if fr == nil {
			fr = &feedReport{}
			logf("gpu feed: %v", err)
		}
		if *flagCheckpoint {
			fr.ckpt = e.runCheckpoint(ctx, fz, selected)
			fr.restore = e.runRestore(ctx, fz.RestoreShard, selected)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		report += "\n" + fr.render(fz)
	}
	fmt.Println(report)
	if *flagOut != "" {
		f, err := os.OpenFile(*flagOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteString("\n" + report); err != nil {
			return err
		}
		logf("appended to %s", *flagOut)
	}
	return nil
}

// seed writes the data set to local disk and uploads the same bytes.
func (e *env) seed(ctx context.Context) error {
	e.large = "large/data.bin"
	// Only what the selected workloads read: uploads to Azurite are slow
	// (about 60 MB/s), and a GPU-feed-only run needs neither.
	needLarge := *flagMatrix && slices.ContainsFunc([]int{1, 2, 3, 4, 5, 6}, selected)
	needSmall := *flagMatrix && slices.ContainsFunc([]int{7, 8, 9, 10}, selected)
	if needSmall {
		for i := range e.sz.SmallFiles {
			e.small = append(e.small, fmt.Sprintf("small/%03d/f%05d.bin", i/100, i))
		}
	}
	t0 := time.Now()
	var names []string
	if needLarge {
		if err := writeRandom(filepath.Join(e.localDir, e.large), e.sz.LargeBytes, 1); err != nil {
			return err
		}
		names = append(names, e.large)
	}
	for i, n := range e.small {
		if err := writeRandom(filepath.Join(e.localDir, n), e.sz.SmallBytes, uint64(i+2)); err != nil {
			return err
		}
	}
	if len(names)+len(e.small) == 0 {
		return nil
	}
	logf("wrote %s local in %v; uploading", human(int64(len(names))*e.sz.LargeBytes+int64(len(e.small))*e.sz.SmallBytes), time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	names = append(names, e.small...)
	jobs := make(chan string)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				f, err := os.Open(filepath.Join(e.localDir, n))
				if err == nil {
					_, err = e.client.UploadFile(ctx, container, n, f, &azblob.UploadFileOptions{BlockSize: 8 << 20, Concurrency: 8})
					f.Close()
				}
				if err != nil {
					select {
					case errc <- fmt.Errorf("upload %s: %w", n, err):
					default:
					}
				}
			}
		}()
	}
	for _, n := range names {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	logf("uploaded in %v", time.Since(t0).Round(time.Millisecond))
	return nil
}

func writeRandom(path string, size int64, seed uint64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 0xb1})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		_, _ = r.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	return f.Close()
}

func dropCaches() {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		logf("drop_caches: %v", err)
	}
}

func withNote(r result, note string) result {
	if note == "" {
		return r
	}
	if r.Note != "" {
		r.Note += "; "
	}
	r.Note += note
	return r
}

// mounted is one FUSE mount of a peer.
type mounted struct {
	tracer      *rangeTracer
	pid         int // the daemon (blobfs) or rclone process
	peer        string
	dir         string
	metricsAddr string // blobfs only
	unmount     func()
}

var (
	metricRequests  = regexp.MustCompile(`^blobfs_backend_requests_total\{op="([^"]*)",result="([^"]*)"\} ([0-9.e+]+)$`)
	metricReadBytes = regexp.MustCompile(`^blobfs_backend_bytes_total\{direction="read"\} ([0-9.e+]+)$`)
	// metricPassthrough: opens the kernel served from the cache's file.
	metricPassthrough = regexp.MustCompile(`^blobfs_fuse_passthrough_opens_total ([0-9.e+]+)$`)
	// Blocks read back from the cache's disk (read and verified by the
	// daemon), and opens that waited for a fetch to hand the file over.
	metricDiskHits  = regexp.MustCompile(`^blobfs_cache_hits_total\{tier="disk"\} ([0-9.e+]+)$`)
	metricOpenWaits = regexp.MustCompile(`^blobfs_cache_backing_waits_total ([0-9.e+]+)$`)
	// metricCounters are the single-value counters scrape sums, by key.
	metricCounters = []struct {
		re  *regexp.Regexp
		key string
	}{
		{metricReadBytes, "read_bytes"},
		{metricPassthrough, "passthrough opens"},
		{metricDiskHits, "disk block reads"},
		{metricOpenWaits, "opens waiting for a fetch"},
	}
)

// scrape returns blobfs's backend counters: requests by op (and
// op/result for failures), "read_bytes", the opens handed to the kernel
// ("passthrough opens"), the blocks the daemon read back from its disk
// tier, and the opens that waited for a fetch first.
func (m *mounted) scrape() map[string]float64 {
	if m.tracer != nil {
		m.tracer.reset()
	}
	if m.metricsAddr == "" {
		return nil
	}
	resp, err := http.Get("http://" + m.metricsAddr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if sm := metricRequests.FindStringSubmatch(l); sm != nil {
			v, _ := strconv.ParseFloat(sm[3], 64)
			out[sm[1]] += v
			if sm[2] != "ok" {
				out[sm[1]+"/"+sm[2]] += v
			}
			continue
		}
		for _, mc := range metricCounters {
			if sm := mc.re.FindStringSubmatch(l); sm != nil {
				v, _ := strconv.ParseFloat(sm[1], 64)
				out[mc.key] += v
				break
			}
		}
	}
	return out
}

// getStats describes blobfs's backend traffic since before: the number of
// ranged reads and their average size.
func (m *mounted) getStats(before map[string]float64) string {
	traced := ""
	if m.tracer != nil {
		traced = m.tracer.summary()
	}
	after := m.scrape()
	if after == nil {
		return ""
	}
	d := func(k string) float64 { return after[k] - before[k] }
	reads, bytes := d("read"), d("read_bytes")
	s := fmt.Sprintf("backend: %.0f range reads", reads)
	if reads > 0 {
		s += fmt.Sprintf(", %s, avg %s", human(int64(bytes)), human(int64(bytes/reads)))
	}
	var other []string
	for k := range after {
		if k != "read" && k != "read_bytes" && d(k) > 0 {
			other = append(other, fmt.Sprintf("%s %.0f", k, d(k)))
		}
	}
	sort.Strings(other)
	if len(other) > 0 {
		s += "; " + strings.Join(other, ", ")
	}
	if traced != "" {
		s += "; " + traced
	}
	return s
}

// rangeTracer is a reverse proxy that records the size of every GET's
// x-ms-range (or Range) header.
type rangeTracer struct {
	endpoint string
	mu       sync.Mutex
	sizes    map[int64]int
	unranged int
}

var rangeHeader = regexp.MustCompile(`bytes=(\d+)-(\d+)`)

func newRangeTracer(target string) (*rangeTracer, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &rangeTracer{sizes: map[int64]int{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("comp") == "" && r.URL.Query().Get("restype") == "" {
			h := r.Header.Get("x-ms-range")
			if h == "" {
				h = r.Header.Get("Range")
			}
			t.mu.Lock()
			if sm := rangeHeader.FindStringSubmatch(h); sm != nil {
				a, _ := strconv.ParseInt(sm[1], 10, 64)
				b, _ := strconv.ParseInt(sm[2], 10, 64)
				t.sizes[b-a+1]++
			} else {
				t.unranged++
			}
			t.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	cleanups.add(func() { _ = srv.Close() })
	t.endpoint = "http://" + l.Addr().String() + u.Path
	return t, nil
}

func (t *rangeTracer) reset() {
	t.mu.Lock()
	t.sizes, t.unranged = map[int64]int{}, 0
	t.mu.Unlock()
}

func (t *rangeTracer) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keys []int64
	total := 0
	for k, n := range t.sizes {
		keys = append(keys, k)
		total += n
	}
	sort.Slice(keys, func(i, j int) bool { return t.sizes[keys[i]] > t.sizes[keys[j]] })
	var parts []string
	for i, k := range keys {
		if i == 5 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s×%d", human(k), t.sizes[k]))
	}
	return fmt.Sprintf("HTTP GETs %d ranged [%s], %d whole", total, strings.Join(parts, " "), t.unranged)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}

// mount mounts peer p read-only on a fresh directory and cache dir.
func (e *env) mount(ctx context.Context, p string) (*mounted, error) {
	return e.mountMode(ctx, p, true)
}

// mountRW mounts peer p writable (the checkpoint workloads).
func (e *env) mountRW(ctx context.Context, p string) (*mounted, error) {
	return e.mountMode(ctx, p, false)
}

func (e *env) mountMode(ctx context.Context, p string, readOnly bool) (*mounted, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.mountSeq++
	base := filepath.Join(e.work, fmt.Sprintf("%s-%d", p, e.mountSeq))
	dir, cacheDir, logFile := filepath.Join(base, "mnt"), filepath.Join(base, "cache"), filepath.Join(base, p+".log")
	for _, d := range []string{dir, cacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	m := &mounted{peer: p, dir: dir}
	if p == peerBlobfs {
		m.tracer = e.tracer
	}
	var once sync.Once
	switch p {
	case peerBlobfs:
		m.metricsAddr = freeAddr()
		endpoint := e.az.BlobEndpoint()
		if e.tracer != nil {
			endpoint = e.tracer.endpoint
		}
		args := append([]string{"mount", dir, "--container", container,
			"--endpoint", endpoint, "--cache-dir", cacheDir, "--log-file", logFile,
			"--read-only=" + strconv.FormatBool(readOnly), "--metrics-addr", m.metricsAddr}, strings.Fields(*flagBlobfsArgs)...)
		if *flagPprofDir != "" {
			args = append(args, "--debug-pprof")
		}
		cmd := exec.CommandContext(ctx, e.blobfsBin, args...)
		cmd.Env = append(os.Environ(), "AZURE_STORAGE_ACCOUNT="+e.az.Account(), "AZURE_STORAGE_ACCESS_KEY="+e.az.Key())
		out, err := cmd.CombinedOutput()
		if err != nil {
			forceUnmount(dir)
			return nil, fmt.Errorf("blobfs mount: %v: %s\nlog: %s", err, out, tail(logFile))
		}
		if sm := daemonPID.FindSubmatch(out); sm != nil {
			m.pid, _ = strconv.Atoi(string(sm[1]))
		}
		m.unmount = func() {
			once.Do(func() {
				if out, err := exec.Command(e.blobfsBin, "unmount", dir).CombinedOutput(); err != nil {
					logf("blobfs unmount %s: %v %s", dir, err, out)
				}
				forceUnmount(dir)
			})
		}
	case peerRclone:
		cmd := exec.Command(e.rcloneBin, "mount", "az:"+container, dir,
			"--vfs-cache-mode", "full", "--cache-dir", cacheDir, "--read-only="+strconv.FormatBool(readOnly),
			"--log-file", logFile, "--log-level", "NOTICE")
		cmd.Env = append(os.Environ(),
			"RCLONE_CONFIG_AZ_TYPE=azureblob",
			"RCLONE_CONFIG_AZ_ACCOUNT="+e.az.Account(),
			"RCLONE_CONFIG_AZ_KEY="+e.az.Key(),
			"RCLONE_CONFIG_AZ_ENDPOINT="+e.az.BlobEndpoint(),
		)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		m.pid = cmd.Process.Pid
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		m.unmount = func() {
			once.Do(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
				forceUnmount(dir)
			})
		}
		deadline := time.Now().Add(30 * time.Second)
		for !isMounted(dir) {
			select {
			case <-exited:
				return nil, fmt.Errorf("rclone mount exited: %s", tail(logFile))
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				m.unmount()
				return nil, fmt.Errorf("rclone mount: not mounted after 30s: %s", tail(logFile))
			}
		}
	}
	cleanups.add(m.unmount)
	return m, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func isMounted(dir string) bool {
	ok, _ := mountinfo.IsMountPoint(dir)
	return ok
}

// forceUnmount makes sure nothing stays mounted at dir.
func forceUnmount(dir string) {
	for i := 0; i < 50 && isMounted(dir); i++ {
		if i == 0 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_ = exec.Command("umount", "-l", dir).Run()
		time.Sleep(100 * time.Millisecond)
	}
}

// children are the running readers (fio), killed first on cleanup.
var children struct {
	mu   sync.Mutex
	cmds map[*exec.Cmd]bool
	done bool
}

func startChild(cmd *exec.Cmd) error {
	children.mu.Lock()
	defer children.mu.Unlock()
	if children.done {
		return errors.New("cleaning up")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if children.cmds == nil {
		children.cmds = map[*exec.Cmd]bool{}
	}
	children.cmds[cmd] = true
	return nil
}

func endChild(cmd *exec.Cmd) {
	children.mu.Lock()
	delete(children.cmds, cmd)
	children.mu.Unlock()
}

// killChildren kills every running reader's process group and keeps new
// ones from starting.
func killChildren() {
	children.mu.Lock()
	defer children.mu.Unlock()
	children.done = true
	for c := range children.cmds {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	if len(children.cmds) > 0 {
		time.Sleep(500 * time.Millisecond) // let the kernel close their files
	}
}

// fio runs one job and returns its read section.
func fio(args ...string) (bw, iops float64, err error) {
	cmd := exec.Command("fio", append([]string{"--output-format=json", "--thread", "--ioengine=psync", "--readonly", "--invalidate=1"}, args...)...)
	// Its own process group, so cleanup can kill fio and its job
	// processes: a reader left holding a file open keeps a mount busy.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := startChild(cmd); err != nil {
		return 0, 0, err
	}
	err = cmd.Wait()
	endChild(cmd)
	out := []byte(stdout.String())
	if err != nil {
		return 0, 0, fmt.Errorf("fio: %v: %s", err, strings.TrimSpace(string(out)+stderr.String()))
	}
	// fio may print warnings before the JSON.
	if i := strings.IndexByte(string(out), '{'); i > 0 {
		out = out[i:]
	}
	var r struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				BW   float64 `json:"bw_bytes"`
				IOPS float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, 0, fmt.Errorf("fio output: %w", err)
	}
	if len(r.Jobs) == 0 || r.Jobs[0].Error != 0 {
		return 0, 0, fmt.Errorf("fio job failed: %s", out)
	}
	return r.Jobs[0].Read.BW, r.Jobs[0].Read.IOPS, nil
}

var daemonPID = regexp.MustCompile(`daemon pid (\d+)`)

// haveFio is false where fio is not installed, or BLOBFS_BENCH_NO_FIO is set.
var haveFio = true

// goSeq is fioSeq without fio: readers goroutines each read path front to
// back in 1 MiB read(2) calls; it returns their aggregate bandwidth.
func goSeq(path string, readers int) result {
	var total atomic.Int64
	errs := make(chan error, readers)
	t0 := time.Now()
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			f, err := os.Open(path)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			for {
				n, err := f.Read(buf)
				total.Add(int64(n))
				if err == io.EOF {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: float64(total.Load()) / time.Since(t0).Seconds() / 1e6}
}

// fioSeq reads path front to back with readers concurrent jobs (each the
// whole file) and returns their aggregate bandwidth.
func fioSeq(path string, size int64, readers int) result {
	if !haveFio {
		return goSeq(path, readers)
	}
	bw, _, err := fio("--name=seq", "--filename="+path, "--rw=read", "--bs=1M", "--size="+strconv.FormatInt(size, 10),
		"--numjobs="+strconv.Itoa(readers), "--group_reporting")
	if err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: bw / 1e6}
}

// fioRand reads blocks of bs at random offsets for secs seconds: IOPS for
// 4k, MB/s otherwise.
func fioRand(path string, secs int, bs string, direct bool) result {
	if !haveFio {
		return result{Err: "fio is not installed"}
	}
	d := "1"
	if !direct {
		d = "0"
	}
	bw, iops, err := fio("--name=rand", "--filename="+path, "--rw=randread", "--bs="+bs, "--direct="+d,
		"--time_based", "--runtime="+strconv.Itoa(secs), "--randrepeat=1")
	if err != nil {
		return result{Err: err.Error()}
	}
	if bs == "4k" {
		return result{Value: iops}
	}
	return result{Value: bw / 1e6, Note: fmt.Sprintf("%.0f IOPS", iops)}
}

// readFiles reads every name under root once with workers readers.
func readFiles(root string, names []string, workers int) result {
	var total atomic.Int64
	var firstErr atomic.Value
	jobs := make(chan string)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for n := range jobs {
				f, err := os.Open(filepath.Join(root, n))
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				for {
					k, err := f.Read(buf)
					total.Add(int64(k))
					if err != nil {
						if err != io.EOF {
							firstErr.CompareAndSwap(nil, err)
						}
						break
					}
				}
				f.Close()
			}
		}()
	}
	for _, n := range names {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	el := time.Since(t0)
	if err, _ := firstErr.Load().(error); err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: float64(total.Load()) / el.Seconds() / 1e6,
		Note: fmt.Sprintf("%.0f files/s", float64(len(names))/el.Seconds())}
}

// sdkSeq downloads the large blob into memory with parallel 8 MiB ranges.
func (e *env) sdkSeq(ctx context.Context) result {
	buf := make([]byte, e.sz.LargeBytes)
	t0 := time.Now()
	n, err := e.client.DownloadBuffer(ctx, container, e.large, buf, &azblob.DownloadBufferOptions{BlockSize: 8 << 20, Concurrency: 16})
	el := time.Since(t0)
	if err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: float64(n) / el.Seconds() / 1e6, Note: "DownloadBuffer 8 MiB × 16"}
}

// sdkRand issues one ranged GET of bs at a time, like fio's psync job:
// IOPS for 4 KiB, MB/s otherwise.
func (e *env) sdkRand(ctx context.Context, bs int64) result {
	bc := e.client.ServiceClient().NewContainerClient(container).NewBlobClient(e.large)
	r := rand.New(rand.NewPCG(1, 2))
	blocks := e.sz.LargeBytes / bs
	buf := make([]byte, bs)
	var ops int
	t0 := time.Now()
	deadline := t0.Add(time.Duration(e.sz.RandSecs) * time.Second)
	for time.Now().Before(deadline) {
		off := r.Int64N(blocks) * bs
		resp, err := bc.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: bs}})
		if err != nil {
			return result{Err: err.Error()}
		}
		_, err = io.ReadFull(resp.Body, buf)
		resp.Body.Close()
		if err != nil {
			return result{Err: err.Error()}
		}
		ops++
	}
	el := time.Since(t0).Seconds()
	if bs != 4096 {
		return result{Value: float64(ops) * float64(bs) / el / 1e6, Note: fmt.Sprintf("one %s ranged GET at a time", human(bs))}
	}
	return result{Value: float64(ops) / el, Note: "one 4 KiB ranged GET at a time"}
}

// sdkSmall downloads every small blob with the same parallelism as the
// file readers.
func (e *env) sdkSmall(ctx context.Context) result {
	var total atomic.Int64
	var firstErr atomic.Value
	jobs := make(chan string)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range *flagWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, e.sz.SmallBytes)
			for n := range jobs {
				k, err := e.client.DownloadBuffer(ctx, container, n, buf, &azblob.DownloadBufferOptions{BlockSize: 8 << 20, Concurrency: 1})
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
				total.Add(k)
			}
		}()
	}
	for _, n := range e.small {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	el := time.Since(t0)
	if err, _ := firstErr.Load().(error); err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: float64(total.Load()) / el.Seconds() / 1e6,
		Note: fmt.Sprintf("%.0f files/s", float64(len(e.small))/el.Seconds())}
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func kernel() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "?"
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if i := strings.IndexByte(l, ':'); i >= 0 {
				return strings.TrimSpace(l[i+1:])
			}
		}
	}
	return "?"
}

func rcloneVersion(bin string) string {
	if bin == "" {
		return "not installed"
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func fioVersion() string {
	out, _ := exec.Command("fio", "--version").Output()
	return strings.TrimSpace(string(out))
}

func ratio(a, b result) string {
	if a.Err != "" || b.Err != "" || a.Value == 0 || b.Value == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a.Value/b.Value)
}

func (e *env) render(wls []*workload) string {
	var b strings.Builder
	cmd := "make bench"
	if e.sz.Name != "small" {
		cmd = "BLOBFS_BENCH_SIZE=" + e.sz.Name + " make bench"
	}
	if extra := flagsSet(); extra != "" {
		cmd = "go run ./bench " + extra + " (BLOBFS_BENCH_SIZE=" + e.sz.Name + ")"
	}
	fmt.Fprintf(&b, "## %s — BLOBFS_BENCH_SIZE=%s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), e.sz.Name)
	fmt.Fprintf(&b, "- Command: `%s`\n", cmd)
	fmt.Fprintf(&b, "- Machine: nproc %d, %s, kernel %s, %s\n", runtime.NumCPU(), cpuModel(), kernel(), runtime.Version())
	fmt.Fprintf(&b, "- Azurite %s (in memory, one node process); %s; %s\n", azurite.Version, rcloneVersion(e.rcloneBin), fioVersion())
	fmt.Fprintf(&b, "- Mounts: `blobfs mount --read-only` (defaults: block-size-mb 8, prefetch 16, parallelism 16), "+
		"`rclone mount --vfs-cache-mode full --read-only` (defaults otherwise); a fresh mount and cache dir for every cold workload\n\n")
	for _, w := range wls {
		fmt.Fprintf(&b, "### %s\n\n", w.Name)
		fmt.Fprintf(&b, "| peer | %s | notes |\n|---|---:|---|\n", w.Unit)
		for _, p := range peers {
			r, ok := w.Results[p]
			if !ok {
				fmt.Fprintf(&b, "| %s | – | not run |\n", p)
				continue
			}
			v := fmt.Sprintf("%.0f", r.Value)
			if r.Value < 10 {
				v = fmt.Sprintf("%.2f", r.Value)
			}
			note := r.Note
			if r.Err != "" {
				v = "error"
				note = strings.ReplaceAll(firstLine(r.Err), "|", "/")
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", p, v, note)
		}
		bf := w.Results[peerBlobfs]
		better := "higher is better"
		if w.LowerBetter {
			better = "lower is better"
		}
		fmt.Fprintf(&b, "\nblobfs/rclone **%s**, blobfs/raw-SDK **%s**, blobfs/local-disk **%s** (%s)\n\n",
			ratio(bf, w.Results[peerRclone]), ratio(bf, w.Results[peerSDK]), ratio(bf, w.Results[peerLocal]), better)
	}
	b.WriteString("Notes:\n\n")
	notes := append([]string{
		fmt.Sprintf("Azurite (one Node.js process) shares the machine's %d cores with the client under test; on 2 cores it is the bottleneck for every cold number: compare ratios, not absolutes.", runtime.NumCPU()),
		"No peer requests range MD5s (blobfs's `--verify-reads`, BlobFuse2's validate-md5, is off by default; -blobfs-args=--verify-reads turns it on).",
		fmt.Sprintf("%d trials per workload and peer, median reported (every trial's value in the notes); a fresh mount and cache dir for every cold trial; warm trials re-read on the cold trial's mount.", max(*flagTrials, 1)),
		"Page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every trial; fio also invalidates the file's pages (`--invalidate=1`).",
		"Daemon CPU-s/GiB and peak RSS (VmHWM) are the mount process's (blobfs: the daemon; rclone: its mount process) over the cold sequential trial, per GiB delivered to the readers (4 readers: 4× the file).",
		"raw-SDK 'warm' is a second download (there is no cache); local-disk 'warm' is the same as cold.",
	}, e.notes...)
	for _, n := range notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

// flagsSet lists the diagnostic flags given, which make a run differ from
// make bench's.
func flagsSet() string {
	var out []string
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "out", "blobfs", "rclone", "workdir":
		default:
			out = append(out, "-"+f.Name+"="+f.Value.String())
		}
	})
	return strings.Join(out, " ")
}

func firstLine(s string) string { return firstLineMax(s, 200) }

// firstLineMax is s's first line, cut to max bytes.
func firstLineMax(s string, max int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
