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
}

var sizeSets = map[string]sizes{
	"small": {Name: "small", LargeBytes: 512 << 20, SmallFiles: 1000, SmallBytes: 256 << 10, RandSecs: 20},
	"full":  {Name: "full", LargeBytes: 4 << 30, SmallFiles: 10000, SmallBytes: 256 << 10, RandSecs: 60},
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
	Name    string
	Unit    string // "MB/s" or "IOPS"
	Results map[string]result
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
	if _, err := exec.LookPath("fio"); err != nil {
		return errors.New("needs fio (make deps installs it)")
	}
	e := &env{sz: sz}
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

	seqCold := &workload{Name: fmt.Sprintf("1. cold sequential read, one %s file (fio read bs=1M psync, buffered)", human(sz.LargeBytes)), Unit: "MB/s", Results: map[string]result{}}
	seqWarm := &workload{Name: "2. warm sequential re-read, second epoch (node/vfs cache; page cache dropped)", Unit: "MB/s", Results: map[string]result{}}
	randCold := &workload{Name: fmt.Sprintf("3. cold random 4 KiB reads (fio randread bs=4k direct=1 psync, %ds)", sz.RandSecs), Unit: "IOPS", Results: map[string]result{}}
	smallCold := &workload{Name: fmt.Sprintf("4. %d × %s files read once, cold (%d parallel readers)", sz.SmallFiles, human(sz.SmallBytes), *flagWorkers), Unit: "MB/s", Results: map[string]result{}}
	wls := []*workload{seqCold, seqWarm, randCold, smallCold}

	for _, p := range peers {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p == peerRclone && e.rcloneBin == "" || !slices.Contains(strings.Split(*flagPeers, ","), p) {
			continue
		}
		logf("== %s", p)
		e.runPeer(ctx, p, seqCold, seqWarm, randCold, smallCold)
	}

	if err := ctx.Err(); err != nil {
		return err // interrupted: partial results are not recorded
	}
	report := e.render(wls)
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
	for i := range e.sz.SmallFiles {
		e.small = append(e.small, fmt.Sprintf("small/%03d/f%05d.bin", i/100, i))
	}
	t0 := time.Now()
	if err := writeRandom(filepath.Join(e.localDir, e.large), e.sz.LargeBytes, 1); err != nil {
		return err
	}
	for i, n := range e.small {
		if err := writeRandom(filepath.Join(e.localDir, n), e.sz.SmallBytes, uint64(i+2)); err != nil {
			return err
		}
	}
	logf("wrote %s local in %v; uploading", human(e.sz.LargeBytes+int64(e.sz.SmallFiles)*e.sz.SmallBytes), time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	names := append([]string{e.large}, e.small...)
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

// runPeer runs every workload for one peer. Mounting peers get a fresh
// mount and cache directory for each cold workload.
func (e *env) runPeer(ctx context.Context, p string, seqCold, seqWarm, randCold, smallCold *workload) {
	switch p {
	case peerSDK:
		seqCold.Results[p] = e.sdkSeq(ctx)
		seqWarm.Results[p] = withNote(e.sdkSeq(ctx), "no cache: a second download")
		randCold.Results[p] = e.sdkRand(ctx)
		smallCold.Results[p] = e.sdkSmall(ctx)
		return
	case peerLocal:
		dropCaches()
		seqCold.Results[p] = fioSeq(filepath.Join(e.localDir, e.large), e.sz.LargeBytes)
		dropCaches()
		seqWarm.Results[p] = withNote(fioSeq(filepath.Join(e.localDir, e.large), e.sz.LargeBytes), "same as cold: page cache dropped")
		dropCaches()
		randCold.Results[p] = fioRand(filepath.Join(e.localDir, e.large), e.sz.RandSecs, true)
		dropCaches()
		smallCold.Results[p] = readFiles(e.localDir, e.small, *flagWorkers)
		return
	}
	// A mount: seq cold + warm on one mount, then a fresh mount each.
	func() {
		m, err := e.mount(ctx, p)
		if err != nil {
			seqCold.Results[p], seqWarm.Results[p] = result{Err: err.Error()}, result{Err: err.Error()}
			return
		}
		defer m.unmount()
		path := filepath.Join(m.dir, e.large)
		dropCaches()
		before := m.scrape()
		seqCold.Results[p] = withNote(fioSeq(path, e.sz.LargeBytes), m.getStats(before))
		if p == peerRclone {
			// rclone writes the vfs cache in the background; let it settle
			// so the second epoch reads its cache, not the backend.
			time.Sleep(2 * time.Second)
		}
		dropCaches()
		before = m.scrape()
		seqWarm.Results[p] = withNote(fioSeq(path, e.sz.LargeBytes), m.getStats(before))
	}()
	func() {
		m, err := e.mount(ctx, p)
		if err != nil {
			randCold.Results[p] = result{Err: err.Error()}
			return
		}
		defer m.unmount()
		dropCaches()
		before := m.scrape()
		r := fioRand(filepath.Join(m.dir, e.large), e.sz.RandSecs, true)
		if r.Err != "" && strings.Contains(r.Err, "nvalid argument") {
			logf("%s: O_DIRECT refused; buffered random reads instead", p)
			r = withNote(fioRand(filepath.Join(m.dir, e.large), e.sz.RandSecs, false), "O_DIRECT refused: buffered")
		}
		randCold.Results[p] = withNote(r, m.getStats(before))
	}()
	func() {
		m, err := e.mount(ctx, p)
		if err != nil {
			smallCold.Results[p] = result{Err: err.Error()}
			return
		}
		defer m.unmount()
		dropCaches()
		before := m.scrape()
		smallCold.Results[p] = withNote(readFiles(m.dir, e.small, *flagWorkers), m.getStats(before))
	}()
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
	peer        string
	dir         string
	metricsAddr string // blobfs only
	unmount     func()
}

var (
	metricRequests  = regexp.MustCompile(`^blobfs_backend_requests_total\{op="([^"]*)",result="([^"]*)"\} ([0-9.e+]+)$`)
	metricReadBytes = regexp.MustCompile(`^blobfs_backend_bytes_total\{direction="read"\} ([0-9.e+]+)$`)
)

// scrape returns blobfs's backend counters: requests by op (and
// op/result for failures), and "read_bytes".
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
		} else if sm := metricReadBytes.FindStringSubmatch(l); sm != nil {
			v, _ := strconv.ParseFloat(sm[1], 64)
			out["read_bytes"] += v
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

func (e *env) mount(ctx context.Context, p string) (*mounted, error) {
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
			"--read-only", "--metrics-addr", m.metricsAddr}, strings.Fields(*flagBlobfsArgs)...)
		cmd := exec.CommandContext(ctx, e.blobfsBin, args...)
		cmd.Env = append(os.Environ(), "AZURE_STORAGE_ACCOUNT="+e.az.Account(), "AZURE_STORAGE_ACCESS_KEY="+e.az.Key())
		out, err := cmd.CombinedOutput()
		if err != nil {
			forceUnmount(dir)
			return nil, fmt.Errorf("blobfs mount: %v: %s\nlog: %s", err, out, tail(logFile))
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
			"--vfs-cache-mode", "full", "--cache-dir", cacheDir, "--read-only",
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

func fioSeq(path string, size int64) result {
	bw, _, err := fio("--name=seq", "--filename="+path, "--rw=read", "--bs=1M", "--size="+strconv.FormatInt(size, 10))
	if err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: bw / 1e6}
}

func fioRand(path string, secs int, direct bool) result {
	d := "1"
	if !direct {
		d = "0"
	}
	_, iops, err := fio("--name=rand", "--filename="+path, "--rw=randread", "--bs=4k", "--direct="+d,
		"--time_based", "--runtime="+strconv.Itoa(secs), "--randrepeat=1")
	if err != nil {
		return result{Err: err.Error()}
	}
	return result{Value: iops}
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

// sdkRand issues one 4 KiB ranged GET at a time, like fio's psync job.
func (e *env) sdkRand(ctx context.Context) result {
	bc := e.client.ServiceClient().NewContainerClient(container).NewBlobClient(e.large)
	r := rand.New(rand.NewPCG(1, 2))
	blocks := e.sz.LargeBytes / 4096
	buf := make([]byte, 4096)
	var ops int
	t0 := time.Now()
	deadline := t0.Add(time.Duration(e.sz.RandSecs) * time.Second)
	for time.Now().Before(deadline) {
		off := r.Int64N(blocks) * 4096
		resp, err := bc.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: 4096}})
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
	return result{Value: float64(ops) / time.Since(t0).Seconds(), Note: "one 4 KiB ranged GET at a time"}
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
			note := r.Note
			if r.Err != "" {
				v = "error"
				note = strings.ReplaceAll(firstLine(r.Err), "|", "/")
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", p, v, note)
		}
		bf := w.Results[peerBlobfs]
		fmt.Fprintf(&b, "\nblobfs/rclone **%s**, blobfs/raw-SDK **%s**, blobfs/local-disk **%s**\n\n",
			ratio(bf, w.Results[peerRclone]), ratio(bf, w.Results[peerSDK]), ratio(bf, w.Results[peerLocal]))
	}
	b.WriteString("Notes:\n\n")
	notes := append([]string{
		"Azurite (one Node.js process) shares the 2 cores with the client under test and is the bottleneck for every cold number: compare ratios, not absolutes.",
		"blobfs verifies an MD5 of every ranged GET (azstore range checksums); `blobfs mount` exposes no flag to turn that off, so blobfs's cold numbers include the checksum cost (Azurite computes the MD5 too). The raw SDK and rclone do not request range MD5s.",
		"Page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every trial; fio also invalidates the file's pages (`--invalidate=1`).",
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

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
