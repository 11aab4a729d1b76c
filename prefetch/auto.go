package prefetch

import (
	"context"
	"errors"
	"os"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/control"
)

// AutoOptions configure the mount's automatic prefetch.
type AutoOptions struct {
	// CheckpointFraction: reading a checkpoint marker (DeepSpeed `latest`,
	// DCP `.metadata`, Trainer `trainer_state.json`) prefetches the rest of
	// that checkpoint, at most this fraction of the cache's disk budget.
	// 0 turns it off.
	CheckpointFraction float64
	// NextShards: a file of at least ShardMinBytes read in order to its
	// end prefetches the next NextShards files of its directory (by name,
	// same extension). 0 turns it off.
	NextShards    int
	ShardMinBytes int64
	// RankOf says which rank of how many the process reading ctx is
	// (torchrun's and Ray Train's RANK and WORLD_SIZE); ok false plans
	// the whole checkpoint.
	RankOf func(ctx context.Context) (rank, world int, ok bool)
}

// DefaultAutoOptions: a quarter of the cache for a checkpoint, the next
// two shards of files of 1 MiB and more.
func DefaultAutoOptions() AutoOptions {
	return AutoOptions{CheckpointFraction: 0.25, NextShards: 2, ShardMinBytes: 1 << 20}
}

// sizedReader is the read path Auto watches (fs.Reader and
// fs.SizedReader, without importing fs).
type sizedReader interface {
	ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error)
	ReadAtSized(ctx context.Context, name string, etag blob.ETag, size int64, p []byte, off int64) (int, error)
}

// Auto is the mount's read path with automatic prefetch: it passes every
// read through and watches them for checkpoint markers and for shards
// read in order. What it starts runs in the background at low priority
// through the Runner, so it fills the cache exactly as reads would, and
// never delays the read that triggered it.
type Auto struct {
	next sizedReader
	r    *Runner
	opts AutoOptions

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// triggered remembers what was started (a marker version and rank, or
	// a shard), so each triggers once; bounded by maxTriggers. GUARDED_BY(mu)
	triggered map[string]time.Time
	// streams: per file version, how far it has been read in order from
	// its start. GUARDED_BY(mu)
	streams map[blob.ETag]*autoStream
}

type autoStream struct {
	name string
	next int64
}

const (
	maxTriggers = 4096
	maxStreams  = 4096
	// autoSlack: kernel readahead READs arrive slightly out of order.
	autoSlack = 4 << 20
)

// NewAuto returns next watched by automatic prefetch through r.
func NewAuto(next sizedReader, r *Runner, opts AutoOptions) *Auto {
	ctx, cancel := context.WithCancel(context.Background())
	return &Auto{next: next, r: r, opts: opts, ctx: ctx, cancel: cancel,
		triggered: map[string]time.Time{}, streams: map[blob.ETag]*autoStream{}}
}

// Close stops running automatic prefetches and waits for them.
func (a *Auto) Close() {
	a.cancel()
	a.wg.Wait()
}

// ReadAt passes through.
func (a *Auto) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	return a.next.ReadAt(ctx, name, etag, p, off)
}

// ReadAtSized passes the read through, then looks at it.
func (a *Auto) ReadAtSized(ctx context.Context, name string, etag blob.ETag, size int64, p []byte, off int64) (int, error) {
	n, err := a.next.ReadAtSized(ctx, name, etag, size, p, off)
	if n > 0 {
		a.observe(ctx, name, etag, size, off, int64(n))
	}
	return n, err
}

// isMarker reports whether base names a file a framework reads first when
// it restores a checkpoint.
func isMarker(base string) bool {
	return base == dsLatest || base == ".metadata" || base == "trainer_state.json"
}

func (a *Auto) observe(ctx context.Context, name string, etag blob.ETag, size, off, n int64) {
	base := path.Base(name)
	if a.opts.CheckpointFraction > 0 && off == 0 && isMarker(base) {
		rank, world := 0, 1
		if a.opts.RankOf != nil {
			if r, w, ok := a.opts.RankOf(ctx); ok && w > 1 && r >= 0 && r < w {
				rank, world = r, w
			}
		}
		dir := path.Dir(name)
		if dir == "." {
			dir = ""
		}
		if a.r.markerCovered(name, etag, rank, world) {
			return // an explicit prefetch (an init container's) did it
		}
		if a.first("ck\x00" + markerKey(name, etag, rank, world)) {
			a.startCheckpoint(dir, rank, world)
		}
		return
	}
	if a.opts.NextShards <= 0 || size < a.opts.ShardMinBytes || etag == "" {
		return
	}
	a.mu.Lock()
	s := a.streams[etag]
	if s == nil {
		if off > autoSlack {
			a.mu.Unlock()
			return // not read from its start
		}
		if len(a.streams) >= maxStreams {
			clear(a.streams)
		}
		s = &autoStream{name: name}
		a.streams[etag] = s
	}
	if off > s.next+autoSlack {
		delete(a.streams, etag) // a jump: not in order
		a.mu.Unlock()
		return
	}
	s.next = max(s.next, off+n)
	finished := s.next >= size
	if finished {
		delete(a.streams, etag)
	}
	a.mu.Unlock()
	if finished && a.first("shard\x00"+name+"\x00"+string(etag)) {
		a.startShards(name)
	}
}

// first reports whether key was not triggered before, and records it.
func (a *Auto) first(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.triggered[key]; ok {
		return false
	}
	if len(a.triggered) >= maxTriggers {
		// Forget the oldest half.
		type kt struct {
			k string
			t time.Time
		}
		all := make([]kt, 0, len(a.triggered))
		for k, t := range a.triggered {
			all = append(all, kt{k, t})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].t.Before(all[j].t) })
		for _, e := range all[:len(all)/2] {
			delete(a.triggered, e.k)
		}
	}
	a.triggered[key] = time.Now()
	return true
}

// startCheckpoint prefetches the newest complete checkpoint under dir in
// the background, capped at the configured share of the cache.
func (a *Auto) startCheckpoint(dir string, rank, world int) {
	budget := a.r.c.Stats().DiskBudget
	maxBytes := int64(a.opts.CheckpointFraction * float64(budget))
	if budget <= 0 || maxBytes <= 0 {
		return
	}
	req := control.Request{Op: control.OpPrefetch, Checkpoint: dir, Rank: rank, WorldSize: world, Priority: control.PriorityLow}
	a.run("auto_checkpoint", req, maxBytes)
}

// startShards prefetches the files after name in its directory.
func (a *Auto) startShards(name string) {
	dir := path.Dir(name)
	if dir == "." {
		dir = ""
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ents, err := a.r.t.Names.ReadDir(a.ctx, dir)
		if err != nil {
			return
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
		ext := path.Ext(name)
		var next []string
		passed := false
		for _, e := range ents {
			switch {
			case e.Name == name:
				passed = true
			case passed && !e.Dir && e.File.ETag != "" && path.Ext(e.Name) == ext:
				next = append(next, e.Name)
			}
			if len(next) == a.opts.NextShards {
				break
			}
		}
		if len(next) == 0 {
			return
		}
		budget := a.r.c.Stats().DiskBudget
		a.runSync("auto_shards", control.Request{Op: control.OpPrefetch, Paths: next, Priority: control.PriorityLow}, budget/4)
	}()
}

// run starts a prefetch in the background.
func (a *Auto) run(trigger string, req control.Request, maxBytes int64) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.runSync(trigger, req, maxBytes)
	}()
}

func (a *Auto) runSync(trigger string, req control.Request, maxBytes int64) {
	start := time.Now()
	a.r.active.Add(1)
	ev, _ := a.r.prefetch(a.ctx, req, func(control.Event) {}, maxBytes)
	a.r.active.Add(-1)
	a.r.observe(trigger, ev, start)
	log := a.r.t.Logger.With("trigger", trigger, "checkpoint", req.Checkpoint, "paths", req.Paths)
	if ev.Type == control.EventError {
		log.Info("automatic prefetch did not complete", "code", ev.Code, "err", ev.Error)
		return
	}
	var n int64
	if ev.Progress != nil {
		n = ev.Progress.DoneBytes
	}
	log.Info("automatic prefetch done", "bytes", n, "took", time.Since(start).Round(time.Millisecond))
}

// backingFile is fs.Backing (and what cache.Reader.OpenBacking returns),
// spelled without importing fs.
type backingFile = interface {
	File() *os.File
	Close() error
}

// backingOpener is fs.BackingOpener.
type backingOpener interface {
	OpenBacking(ctx context.Context, name string, etag blob.ETag, size int64) (backingFile, error)
}

// OpenBacking hands a fully cached file to the kernel through the next
// Reader (FUSE passthrough), except checkpoint markers: their reads must
// pass here to start the checkpoint's prefetch. A shard handed over whole
// is never read through Auto, so its open stands for the in-order read
// that would have prefetched the next shards.
func (a *Auto) OpenBacking(ctx context.Context, name string, etag blob.ETag, size int64) (backingFile, error) {
	bo, ok := a.next.(backingOpener)
	if !ok {
		return nil, errNoBacking
	}
	if a.opts.CheckpointFraction > 0 && isMarker(path.Base(name)) {
		return nil, errNoBacking
	}
	b, err := bo.OpenBacking(ctx, name, etag, size)
	if err != nil {
		return nil, err
	}
	if a.opts.NextShards > 0 && size >= a.opts.ShardMinBytes && etag != "" && a.first("shard\x00"+name+"\x00"+string(etag)) {
		a.startShards(name)
	}
	return b, nil
}

// errNoBacking: Auto does not hand this file to the kernel.
var errNoBacking = errors.New("prefetch: served through the daemon")
