package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/cache"
	"github.com/blobfs/blobfs/internal/control"
	"github.com/blobfs/blobfs/internal/metrics"
)

// Target is what a Runner fills: a store (names are paths from the
// mount's root) and the read path's cache.Reader, so prefetched blocks
// are keyed, fetched and validated exactly as a read miss would.
type Target struct {
	// Store is read by checkpoint discovery and planning.
	Store blob.Store
	// Names resolves paths; nil means StoreNames{Store}.
	Names  Names
	Reader *cache.Reader
	Logger *slog.Logger
	// Metrics, when set, records prefetch operations.
	Metrics *metrics.Prefetch
	// DefaultParallel is the ranges fetched at once when a request does
	// not say (default 16); MaxSlots bounds all prefetches together
	// (default 64).
	DefaultParallel, MaxSlots int
	// ProgressEvery is how often progress is reported (default 250 ms).
	ProgressEvery time.Duration
}

// Runner executes control requests against a Target: it is the mount's
// control.Handler, and the standalone `blobfs prefetch` runs one
// in-process over its own cache.
type Runner struct {
	t      Target
	c      *cache.Cache
	slots  *slots
	active atomic.Int32
	// covered holds the checkpoint markers (name, version, rank) of
	// checkpoints an explicit prefetch completed, so that a job reading
	// them after its init container prefetched does not plan again.
	covered sync.Map // string → struct{}
}

// markerKey names a marker version read (or prefetched) for a rank;
// world 1 (everything) is "*", which covers every rank.
func markerKey(name string, etag blob.ETag, rank, world int) string {
	r := "*"
	if world > 1 {
		r = strconv.Itoa(rank) + "/" + strconv.Itoa(world)
	}
	return name + "\x00" + string(etag) + "\x00" + r
}

// markerCovered reports whether an explicit prefetch already fetched
// what rank of world reads of the checkpoint marker name belongs to.
func (r *Runner) markerCovered(name string, etag blob.ETag, rank, world int) bool {
	if _, ok := r.covered.Load(markerKey(name, etag, 0, 1)); ok {
		return true
	}
	_, ok := r.covered.Load(markerKey(name, etag, rank, world))
	return ok
}

var _ control.Handler = (*Runner)(nil)

// NewRunner returns a Runner for t.
func NewRunner(t Target) *Runner {
	if t.Logger == nil {
		t.Logger = slog.Default()
	}
	if t.DefaultParallel <= 0 {
		t.DefaultParallel = 16
	}
	if t.MaxSlots <= 0 {
		t.MaxSlots = 64
	}
	if t.Names == nil {
		t.Names = StoreNames{Store: t.Store}
	}
	if t.ProgressEvery <= 0 {
		t.ProgressEvery = 250 * time.Millisecond
	}
	return &Runner{t: t, c: t.Reader.Cache(), slots: newSlots(t.MaxSlots)}
}

// chunkSize is the unit a prefetch fetches and reports in: one backend GET
// of the read path's readahead (cache.ReadaheadChunk), block-aligned.
const chunkSize = cache.ReadaheadChunk

// Handle implements control.Handler.
func (r *Runner) Handle(ctx context.Context, req control.Request, emit func(control.Event)) control.Event {
	start := time.Now()
	var ev control.Event
	switch req.Op {
	case control.OpPrefetch:
		r.active.Add(1)
		var markers []File
		ev, markers = r.prefetch(ctx, req, emit, 0)
		r.active.Add(-1)
		if req.Checkpoint != "" && ev.Type == control.EventDone {
			for _, m := range markers {
				r.covered.Store(markerKey(m.Name, m.ETag, req.Rank, req.WorldSize), struct{}{})
			}
		}
		trigger := "request"
		if req.Checkpoint != "" {
			trigger = "checkpoint"
		}
		r.observe(trigger, ev, start)
	case control.OpStatus:
		ev = r.status(ctx, req)
	case control.OpEvict, control.OpUnpin:
		ev = r.release(ctx, req)
	default:
		ev = errorEvent(control.CodeBadRequest, fmt.Errorf("unknown op %q", req.Op))
	}
	if ev.Type == control.EventError && ctx.Err() != nil {
		ev.Code = control.CodeCanceled
	}
	return ev
}

// errorEvent is a final error event; the code is refined from err.
func errorEvent(code string, err error) control.Event {
	switch {
	case errors.Is(err, context.Canceled):
		code = control.CodeCanceled
	case errors.Is(err, ErrNoCheckpoint):
		code = control.CodeNoCheckpoint
	case errors.Is(err, fs.ErrNotExist):
		code = control.CodeNotFound
	case errors.Is(err, cache.ErrNoSpace):
		code = control.CodeNoSpace
	}
	return control.Event{Type: control.EventError, Code: code, Error: err.Error()}
}

// piece is a range of one file to fill.
type piece struct {
	file     *fileJob
	off, len int64
}

// fileJob is one file's part of a prefetch.
type fileJob struct {
	f      File
	obj    cache.Object
	fetch  cache.FetchFunc
	ranges []Range // nil: the whole file
	bytes  int64   // planned bytes
	left   atomic.Int32
	failed atomic.Pointer[error]
}

// plan resolves the request into per-file jobs (and the checkpoint).
func (r *Runner) plan(ctx context.Context, req control.Request) (jobs []*fileJob, ck *control.CheckpointInfo, missing []error, err error) {
	if req.Checkpoint != "" {
		return r.planCheckpoint(ctx, req)
	}
	files, missing, err := Resolve(ctx, r.t.Names, req.Paths)
	if err != nil {
		return nil, nil, missing, err
	}
	for _, f := range files {
		jobs = append(jobs, r.job(f, nil))
	}
	return jobs, nil, missing, nil
}

func (r *Runner) job(f File, ranges []Range) *fileJob {
	j := &fileJob{f: f, obj: r.t.Reader.Object(f.Name, f.ETag, f.Size), fetch: r.t.Reader.Fetch(f.Name, f.ETag), ranges: ranges}
	if ranges == nil {
		j.bytes = f.Size
	} else {
		j.bytes = Total(ranges)
	}
	return j
}

// planCheckpoint finds the newest complete checkpoint under req.Checkpoint
// and plans what rank req.Rank of req.WorldSize reads.
func (r *Runner) planCheckpoint(ctx context.Context, req control.Request) ([]*fileJob, *control.CheckpointInfo, []error, error) {
	tree := NewStoreTree(r.t.Store, "")
	cands, err := Candidates(ctx, tree, req.Checkpoint)
	if err != nil {
		return nil, nil, nil, err
	}
	info := &control.CheckpointInfo{}
	var chosen *Checkpoint
	for i := range cands {
		if cands[i].Err == nil {
			chosen = &cands[i].Checkpoint
			break
		}
		info.Skipped = append(info.Skipped, cands[i].Err.Error())
	}
	if chosen == nil {
		return nil, info, nil, fmt.Errorf("%s: no complete checkpoint: %w", displayPath(req.Checkpoint), ErrNoCheckpoint)
	}
	ranges, err := Plan(ctx, tree, *chosen, PlanOptions{Rank: req.Rank, WorldSize: req.WorldSize})
	if err != nil {
		return nil, info, nil, err
	}
	info.Path, info.Layout, info.Content, info.Step = chosen.Path, string(chosen.Layout), string(chosen.Content), chosen.Step
	info.Files, info.Bytes, info.Planned = len(chosen.Files), chosen.Size(), Total(ranges)
	// Group by file, keeping the plan's priority order of first appearance.
	byName := map[string][]Range{}
	var order []string
	for _, rg := range ranges {
		if _, ok := byName[rg.Name]; !ok {
			order = append(order, rg.Name)
		}
		byName[rg.Name] = append(byName[rg.Name], rg)
	}
	jobs := make([]*fileJob, 0, len(order))
	for _, name := range order {
		node, err := r.t.Names.Stat(ctx, name)
		if err != nil {
			return nil, info, nil, fmt.Errorf("checkpoint file %s: %w", name, err)
		}
		if node.Dir || node.File.ETag == "" {
			return nil, info, nil, fmt.Errorf("checkpoint file %s: not a committed file: %w", name, ErrIncomplete)
		}
		jobs = append(jobs, r.job(node.File, byName[name]))
	}
	return jobs, info, nil, nil
}

// pieces cuts a job into pieces aligned to chunkSize: each is at most one
// backend GET, and with the cache's 1 MiB blocks no two pieces share a
// block.
func (j *fileJob) pieces() []piece {
	ranges := j.ranges
	if ranges == nil {
		ranges = []Range{{Name: j.f.Name, Len: j.f.Size}}
	}
	var ps []piece
	for _, rg := range ranges {
		end := min(rg.End(), j.f.Size)
		for off := rg.Off; off < end; {
			next := min((off/chunkSize+1)*chunkSize, end)
			ps = append(ps, piece{file: j, off: off, len: next - off})
			off = next
		}
	}
	return ps
}

// prefetch runs OpPrefetch. maxBytes, when positive, caps the planned
// bytes: files are taken in plan order while they fit. It also returns
// the checkpoint markers among the files fetched.
func (r *Runner) prefetch(ctx context.Context, req control.Request, emit func(control.Event), maxBytes int64) (control.Event, []File) {
	ev, jobs := r.prefetchJobs(ctx, req, emit, maxBytes)
	var markers []File
	for _, j := range jobs {
		if isMarker(path.Base(j.f.Name)) && j.failed.Load() == nil {
			markers = append(markers, j.f)
		}
	}
	return ev, markers
}

func (r *Runner) prefetchJobs(ctx context.Context, req control.Request, emit func(control.Event), maxBytes int64) (control.Event, []*fileJob) {
	start := time.Now()
	jobs, ck, missing, err := r.plan(ctx, req)
	if err != nil {
		ev := errorEvent(control.CodeFailed, err)
		ev.Checkpoint = ck
		return ev, nil
	}
	if maxBytes > 0 {
		var sum int64
		for i, j := range jobs {
			if sum+j.bytes > maxBytes {
				r.t.Logger.Info("prefetch capped", "files", len(jobs), "kept", i, "cap_bytes", maxBytes)
				jobs = jobs[:i]
				break
			}
			sum += j.bytes
		}
	}
	if len(jobs) == 0 && len(missing) > 0 {
		return errorEvent(control.CodeNotFound, errors.Join(missing...)), nil
	}
	var prog progress
	prog.start = start
	prog.totalFiles = int64(len(jobs))
	var queue []piece
	for _, j := range jobs {
		prog.totalBytes += j.bytes
		st, err := r.c.Status(ctx, j.obj)
		if err == nil && st.Complete() && !req.Pin {
			// Nothing to fetch, nothing to pin.
			prog.cachedBytes.Add(j.bytes)
			prog.doneBytes.Add(j.bytes)
			prog.doneFiles.Add(1)
			continue
		}
		ps := j.pieces()
		if len(ps) == 0 {
			prog.doneFiles.Add(1)
			continue
		}
		j.left.Store(int32(len(ps)))
		queue = append(queue, ps...)
	}
	emit(control.Event{Type: control.EventPlan, Checkpoint: ck, Progress: prog.snapshot()})

	parallel := req.Parallel
	if parallel <= 0 {
		parallel = r.t.DefaultParallel
	}
	prio := map[string]int{control.PriorityLow: 0, "": 1, control.PriorityNormal: 1, control.PriorityHigh: 2}[req.Priority]
	lim := newRateLimiter(req.MaxBandwidth)
	work := make(chan piece)
	var wg sync.WaitGroup
	for range min(parallel, max(len(queue), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				r.fill(ctx, p, req.Pin, prio, lim, &prog)
			}
		}()
	}
	tick := time.NewTicker(r.t.ProgressEvery)
	defer tick.Stop()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		defer close(work)
		for _, p := range queue {
			if p.file.failed.Load() != nil {
				r.finishPiece(p, &prog) // its file failed already: skip
				continue
			}
			select {
			case work <- p:
			case <-ctx.Done():
				return
			}
		}
	}()
	done := make(chan struct{})
	go func() { <-fed; wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			emit(control.Event{Type: control.EventProgress, Progress: prog.snapshot()})
		}
	}
	final := control.Event{Type: control.EventDone, Checkpoint: ck, Progress: prog.snapshot()}
	for _, m := range missing {
		final.Files = append(final.Files, control.FileStatus{Error: m.Error()})
	}
	var ferrs []error
	for _, j := range jobs {
		if e := j.failed.Load(); e != nil {
			final.Files = append(final.Files, control.FileStatus{Path: j.f.Name, Size: j.f.Size, Error: (*e).Error()})
			ferrs = append(ferrs, *e)
		}
	}
	if err := ctx.Err(); err != nil {
		final.Type, final.Code, final.Error = control.EventError, control.CodeCanceled, "prefetch canceled: "+err.Error()
		return final, jobs
	}
	if len(ferrs) > 0 || len(missing) > 0 {
		// Some paths failed, others were fetched: a plain failure, whatever
		// the causes (not_found is for nothing found at all).
		err := errors.Join(append(missing, ferrs...)...)
		final.Type, final.Code = control.EventError, control.CodeFailed
		final.Error = fmt.Sprintf("%d of %d files failed: %v", len(ferrs)+len(missing), len(jobs)+len(missing), err)
		if errors.Is(err, cache.ErrNoSpace) {
			final.Code = control.CodeNoSpace
		}
	}
	return final, jobs
}

// fill fetches one piece through the cache, as a read miss would.
func (r *Runner) fill(ctx context.Context, p piece, pin bool, prio int, lim *rateLimiter, prog *progress) {
	defer r.finishPiece(p, prog)
	if p.file.failed.Load() != nil || ctx.Err() != nil {
		return
	}
	if err := lim.wait(ctx, p.len); err != nil {
		return
	}
	if err := r.slots.acquire(ctx, prio); err != nil {
		return
	}
	// Blocks a reader is fetching are left to it (LeaveJoined): they land
	// in the cache all the same, and the warm-up moves on ahead of the
	// readers. Such bytes count as done when the reader's fetch, not the
	// warm-up, still has them in flight.
	err := r.c.Fill(ctx, p.file.obj, p.file.fetch, p.off, p.len, cache.FillOptions{Pin: pin, Prefetch: true, LeaveJoined: true})
	r.slots.release()
	switch {
	case err == nil:
		prog.doneBytes.Add(p.len)
	case ctx.Err() != nil:
		// Canceled: the fetch in flight still lands in the cache.
	default:
		err = fmt.Errorf("%s: %w", p.file.f.Name, err)
		p.file.failed.CompareAndSwap(nil, &err)
		r.t.Logger.Warn("prefetch failed", "blob", p.file.f.Name, "off", p.off, "len", p.len, "err", err)
	}
}

// finishPiece counts a piece as handled and its file as done after its
// last piece.
func (r *Runner) finishPiece(p piece, prog *progress) {
	if p.file.left.Add(-1) != 0 {
		return
	}
	if p.file.failed.Load() != nil {
		prog.failedFiles.Add(1)
	} else {
		prog.doneFiles.Add(1)
	}
}

// progress holds a prefetch's counters.
type progress struct {
	start                  time.Time
	totalFiles             int64
	totalBytes             int64
	doneFiles, failedFiles atomic.Int64
	doneBytes, cachedBytes atomic.Int64
}

func (p *progress) snapshot() *control.Progress {
	return &control.Progress{
		TotalFiles: int(p.totalFiles), TotalBytes: p.totalBytes,
		DoneFiles: int(p.doneFiles.Load()), DoneBytes: p.doneBytes.Load(),
		CachedBytes: p.cachedBytes.Load(), FailedFiles: int(p.failedFiles.Load()),
		ElapsedMS: time.Since(p.start).Milliseconds(),
	}
}

// status runs OpStatus: per file how much is cached, and the counters.
func (r *Runner) status(ctx context.Context, req control.Request) control.Event {
	ev := control.Event{Type: control.EventDone, Cache: r.cacheStats()}
	if len(req.Paths) == 0 && req.Checkpoint == "" {
		return ev
	}
	jobs, ck, missing, err := r.plan(ctx, req)
	if err != nil {
		e := errorEvent(control.CodeFailed, err)
		e.Checkpoint = ck
		return e
	}
	ev.Checkpoint = ck
	for _, j := range jobs {
		st, err := r.c.Status(ctx, j.obj)
		fs := control.FileStatus{Path: j.f.Name, Size: j.f.Size}
		if err != nil {
			fs.Error = err.Error()
		} else {
			fs.CachedBytes = st.CachedBytes
			fs.PinnedBytes = min(st.PinnedBlocks*st.BlockSize, j.f.Size)
		}
		ev.Files = append(ev.Files, fs)
	}
	for _, m := range missing {
		ev.Files = append(ev.Files, control.FileStatus{Error: m.Error()})
	}
	if len(jobs) == 0 && len(missing) > 0 {
		e := errorEvent(control.CodeNotFound, errors.Join(missing...))
		e.Files = ev.Files
		return e
	}
	return ev
}

// cacheStats are the counters OpStatus reports.
func (r *Runner) cacheStats() *control.CacheStats {
	s, ps := r.c.Stats(), r.c.PrefetchStats()
	return &control.CacheStats{
		DiskUsed: s.DiskUsed, DiskBudget: s.DiskBudget,
		Hits: s.RAMHits + s.DiskHits, Misses: s.Misses,
		InflightBlocks:  r.c.InflightFetches(),
		Prefetches:      int(r.active.Load()),
		PrefetchedBytes: ps.FetchedBytes,
		WastedBytes:     ps.WastedBytes,
	}
}

// release runs OpEvict and OpUnpin.
func (r *Runner) release(ctx context.Context, req control.Request) control.Event {
	files, missing, err := Resolve(ctx, r.t.Names, req.Paths)
	if err != nil {
		return errorEvent(control.CodeFailed, err)
	}
	if len(files) == 0 && len(missing) > 0 {
		return errorEvent(control.CodeNotFound, errors.Join(missing...))
	}
	ev := control.Event{Type: control.EventDone, Progress: &control.Progress{TotalFiles: len(files)}}
	var errs []error
	for _, f := range files {
		obj := r.t.Reader.Object(f.Name, f.ETag, f.Size)
		var err error
		if req.Op == control.OpEvict {
			if err = r.c.Forget(ctx, obj); err == nil {
				_, err = r.c.ForgetStale(ctx, obj)
			}
		} else {
			err = r.c.Unpin(ctx, obj, 0, f.Size)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.Name, err))
			ev.Files = append(ev.Files, control.FileStatus{Path: f.Name, Size: f.Size, Error: err.Error()})
			continue
		}
		ev.Progress.DoneFiles++
		ev.Progress.DoneBytes += f.Size
	}
	if err := errors.Join(append(missing, errs...)...); err != nil {
		ev.Type, ev.Code, ev.Error = control.EventError, control.CodeFailed, err.Error()
	}
	return ev
}

// observe records a finished prefetch in the metrics.
func (r *Runner) observe(trigger string, ev control.Event, start time.Time) {
	result := "ok"
	switch {
	case ev.Code == control.CodeCanceled:
		result = "canceled"
	case ev.Type == control.EventError:
		result = "error"
	}
	var n int64
	if ev.Progress != nil {
		n = ev.Progress.DoneBytes
	}
	r.t.Metrics.Observe(trigger, result, time.Since(start), n)
}
