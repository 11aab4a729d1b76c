package prefetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
	"github.com/blobfs/blobfs/cache"
	"github.com/blobfs/blobfs/internal/control"
)

// countingStore counts ranged reads and can hold them until released.
type countingStore struct {
	blob.Store
	reads atomic.Int64
	gate  chan struct{} // non-nil: every read waits for a token
}

func (s *countingStore) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	s.reads.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return s.Store.ReadAt(ctx, name, etag, p, off)
}

type rig struct {
	store  *countingStore
	cache  *cache.Cache
	reader *cache.Reader
	runner *Runner
	data   map[string][]byte
}

func newRig(t *testing.T, files map[string]int) *rig {
	t.Helper()
	ctx := context.Background()
	mem := memblob.New()
	r := &rig{store: &countingStore{Store: mem}, data: map[string][]byte{}}
	for name, n := range files {
		d := make([]byte, n)
		for i := range d {
			d[i] = byte(i*7 + len(name))
		}
		r.data[name] = d
		if _, err := mem.Put(ctx, name, d, blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := cache.Open(ctx, cache.Config{Dir: t.TempDir(), DiskBudgetBytes: 1 << 30, MemBudgetBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r.cache = c
	r.reader = cache.NewReader(c, r.store, cache.ReaderOptions{Account: "acct", Container: "ctr", Identity: "test"})
	t.Cleanup(r.reader.Close)
	r.runner = NewRunner(Target{Store: r.store, Reader: r.reader, ProgressEvery: time.Millisecond})
	return r
}

func (r *rig) do(t *testing.T, ctx context.Context, req control.Request) (control.Event, []control.Event) {
	t.Helper()
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	var evs []control.Event
	final := r.runner.Handle(ctx, req, func(e control.Event) { evs = append(evs, e) })
	return final, evs
}

// cached returns the cached bytes per file, by OpStatus.
func (r *rig) cached(t *testing.T, paths ...string) map[string]int64 {
	t.Helper()
	ev, _ := r.do(t, context.Background(), control.Request{Op: control.OpStatus, Paths: paths})
	out := map[string]int64{}
	for _, f := range ev.Files {
		out[f.Path] = f.CachedBytes
	}
	return out
}

func TestResolve(t *testing.T) {
	r := newRig(t, map[string]int{"a/1": 1, "a/2": 2, "a/b/3": 3, "a/b/c/4": 4, "x/1": 5, "x/y": 6, "top": 7})
	ctx := context.Background()
	for _, tc := range []struct {
		paths   []string
		want    []string
		missing int
	}{
		{[]string{"top"}, []string{"top"}, 0},
		{[]string{"a"}, []string{"a/1", "a/2", "a/b/3", "a/b/c/4"}, 0},
		{[]string{""}, []string{"a/1", "a/2", "a/b/3", "a/b/c/4", "top", "x/1", "x/y"}, 0},
		{[]string{"*/1"}, []string{"a/1", "x/1"}, 0},
		{[]string{"a/*"}, []string{"a/1", "a/2", "a/b/3", "a/b/c/4"}, 0},
		{[]string{"?/b"}, []string{"a/b/3", "a/b/c/4"}, 0},
		{[]string{"x/y", "x", "top", "x/y"}, []string{"x/y", "x/1", "top"}, 0}, // order given, first place
		{[]string{"nope", "a/*/9", "top"}, []string{"top"}, 2},
	} {
		files, missing, err := Resolve(ctx, StoreNames{Store: r.store}, tc.paths)
		if err != nil {
			t.Fatalf("%v: %v", tc.paths, err)
		}
		var got []string
		for _, f := range files {
			got = append(got, f.Name)
			if f.ETag == "" || f.Size != int64(len(r.data[f.Name])) {
				t.Errorf("%v: %+v lacks its version or size", tc.paths, f)
			}
		}
		if !slices.Equal(got, tc.want) || len(missing) != tc.missing {
			t.Errorf("Resolve(%v) = %v, %d missing; want %v, %d missing", tc.paths, got, len(missing), tc.want, tc.missing)
		}
		for _, m := range missing {
			if !errors.Is(m, fs.ErrNotExist) {
				t.Errorf("missing error %v does not wrap fs.ErrNotExist", m)
			}
		}
	}
	if _, _, err := Resolve(ctx, StoreNames{Store: r.store}, []string{"a/[x"}); err == nil {
		t.Error("a malformed pattern resolved")
	}
}

// Prefetch fills exactly the named files through the read path's keys:
// afterwards reads hit without a backend request, and the counters say
// what was fetched.
func TestRunnerPrefetchThenReadHits(t *testing.T) {
	r := newRig(t, map[string]int{"d/big": 20<<20 + 5, "d/small": 100, "d/empty": 0, "other": 3 << 20})
	ctx := context.Background()
	final, evs := r.do(t, ctx, control.Request{Op: control.OpPrefetch, Paths: []string{"d"}, Parallel: 3})
	if final.Type != control.EventDone || final.Progress.DoneFiles != 3 || final.Progress.DoneBytes != 20<<20+105 {
		t.Fatalf("prefetch: %+v %+v", final, final.Progress)
	}
	if len(evs) == 0 || evs[0].Type != control.EventPlan || evs[0].Progress.TotalBytes != 20<<20+105 {
		t.Errorf("first event %+v, want the plan with the total", evs)
	}
	got := r.cached(t, "d", "other")
	if got["d/big"] != 20<<20+5 || got["d/small"] != 100 || got["other"] != 0 {
		t.Errorf("cached %v", got)
	}
	if ps := r.cache.PrefetchStats(); ps.FetchedBytes != 20<<20+105 || ps.WastedBytes != 0 {
		t.Errorf("prefetch stats %+v", ps)
	}
	reads := r.store.reads.Load()
	for _, name := range []string{"d/big", "d/small"} {
		a, err := r.store.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, a.Size)
		if _, err := r.reader.ReadAtSized(ctx, name, a.ETag, a.Size, buf, 0); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, r.data[name]) {
			t.Fatalf("%s read back wrong", name)
		}
	}
	if n := r.store.reads.Load() - reads; n != 0 {
		t.Errorf("reading prefetched files made %d backend reads, want 0", n)
	}
	// Again: all cached, nothing fetched.
	final, _ = r.do(t, ctx, control.Request{Op: control.OpPrefetch, Paths: []string{"d/big"}})
	if final.Progress.CachedBytes != 20<<20+5 || r.store.reads.Load() != reads {
		t.Errorf("second prefetch: %+v, reads %d -> %d", final.Progress, reads, r.store.reads.Load())
	}
	// Evict, pin, unpin.
	if ev, _ := r.do(t, ctx, control.Request{Op: control.OpEvict, Paths: []string{"d/big"}}); ev.Type != control.EventDone {
		t.Fatalf("evict: %+v", ev)
	}
	if got := r.cached(t, "d/big"); got["d/big"] != 0 {
		t.Errorf("after evict: %v", got)
	}
	r.do(t, ctx, control.Request{Op: control.OpPrefetch, Paths: []string{"d/small"}, Pin: true})
	ev, _ := r.do(t, ctx, control.Request{Op: control.OpStatus, Paths: []string{"d/small"}})
	if ev.Files[0].PinnedBytes != 100 {
		t.Errorf("pinned: %+v", ev.Files)
	}
	r.do(t, ctx, control.Request{Op: control.OpUnpin, Paths: []string{"d/small"}})
	ev, _ = r.do(t, ctx, control.Request{Op: control.OpStatus, Paths: []string{"d/small"}})
	if ev.Files[0].PinnedBytes != 0 || ev.Files[0].CachedBytes != 100 {
		t.Errorf("unpinned: %+v", ev.Files)
	}
	if ev.Cache == nil || ev.Cache.DiskUsed == 0 {
		t.Errorf("status without cache counters: %+v", ev.Cache)
	}
	// Missing paths: not_found when nothing matched, failed when some did.
	if ev, _ := r.do(t, ctx, control.Request{Op: control.OpPrefetch, Paths: []string{"nope"}}); ev.Code != control.CodeNotFound {
		t.Errorf("prefetch of nothing: %+v", ev)
	}
	if ev, _ := r.do(t, ctx, control.Request{Op: control.OpPrefetch, Paths: []string{"nope", "d/small"}}); ev.Code != control.CodeFailed || ev.Progress.DoneFiles != 1 {
		t.Errorf("prefetch with a missing path: %+v", ev)
	}
}

// A canceled prefetch stops, says so, and leaves only whole blocks.
func TestRunnerCancel(t *testing.T) {
	r := newRig(t, map[string]int{"f": 64 << 20})
	r.store.gate = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan control.Event)
	go func() {
		ev, _ := r.do(t, ctx, control.Request{Op: control.OpPrefetch, Paths: []string{"f"}, Parallel: 2})
		done <- ev
	}()
	r.store.gate <- struct{}{} // one 8 MiB GET goes through
	cancel()
	close(r.store.gate) // the rest may finish: they land in the cache
	ev := <-done
	if ev.Code != control.CodeCanceled || ev.Type != control.EventError {
		t.Errorf("canceled prefetch: %+v", ev)
	}
	got := r.cached(t, "f")["f"]
	if got%(1<<20) != 0 || got > 64<<20 {
		t.Errorf("cached %d bytes: not whole blocks", got)
	}
}

// A checkpoint prefetch fetches exactly the plan.
func TestRunnerCheckpoint(t *testing.T) {
	ctx := context.Background()
	st := uploadTree(t, fixtureDir, "")
	r := newRig(t, nil)
	r.store.Store = st.store
	dt, err := OpenDir(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	defer dt.Close()
	ck, err := FindLatest(ctx, dt, "deepspeed")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Plan(ctx, dt, ck, PlanOptions{Rank: 1, WorldSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ev, evs := r.do(t, ctx, control.Request{Op: control.OpPrefetch, Checkpoint: "deepspeed", Rank: 1, WorldSize: 2})
	if ev.Type != control.EventDone || ev.Checkpoint == nil || ev.Checkpoint.Path != "deepspeed/global_step200" || len(ev.Checkpoint.Skipped) != 1 {
		t.Fatalf("checkpoint prefetch: %+v %+v", ev, ev.Checkpoint)
	}
	if evs[0].Checkpoint == nil || evs[0].Checkpoint.Planned != Total(plan) {
		t.Errorf("plan event %+v, want %d planned bytes", evs[0].Checkpoint, Total(plan))
	}
	if ev.Progress.DoneBytes != Total(plan) {
		t.Errorf("done %d bytes, want the plan's %d", ev.Progress.DoneBytes, Total(plan))
	}
	planned := map[string]bool{}
	for _, rg := range plan {
		planned[rg.Name] = true
	}
	for name, n := range r.cached(t, "deepspeed") {
		if planned[name] != (n > 0) {
			t.Errorf("%s: %d bytes cached, planned %v", name, n, planned[name])
		}
	}
	if ev, _ := r.do(t, ctx, control.Request{Op: control.OpPrefetch, Checkpoint: "hf/tmp-checkpoint-400"}); ev.Code != control.CodeNoCheckpoint {
		t.Errorf("no checkpoint: %+v", ev)
	}
}

func TestRateLimiter(t *testing.T) {
	l := newRateLimiter(1 << 20) // 1 MiB/s
	ctx := context.Background()
	start := time.Now()
	if err := l.wait(ctx, 256<<10); err != nil { // within the burst: no wait
		t.Fatal(err)
	}
	// Reservations are spaced by bytes/rate: 4 MiB more end 4 s later.
	l.mu.Lock()
	before := l.next
	l.mu.Unlock()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for range 4 {
		if err := l.wait(cctx, 1<<20); !errors.Is(err, context.Canceled) {
			t.Fatalf("wait with a canceled context = %v", err)
		}
	}
	l.mu.Lock()
	after := l.next
	l.mu.Unlock()
	if d := after.Sub(before); d != 4*time.Second {
		t.Errorf("4 MiB at 1 MiB/s reserved %v, want 4s", d)
	}
	if !before.After(start.Add(-300 * time.Millisecond)) {
		t.Errorf("the burst allowance is bounded")
	}
	var unlimited *rateLimiter
	if err := unlimited.wait(ctx, 1<<40); err != nil {
		t.Error(err)
	}
}

func TestSlotsServeHigherPriorityFirst(t *testing.T) {
	s := newSlots(1)
	ctx := context.Background()
	if err := s.acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	waitFor := func(n int) {
		for {
			s.mu.Lock()
			k := len(s.waiters)
			s.mu.Unlock()
			if k == n {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i, prio := range []int{0, 2, 1} {
		go func() {
			if err := s.acquire(ctx, prio); err == nil {
				order <- prio
				s.release()
			}
		}()
		waitFor(i + 1)
	}
	// A waiter that gives up leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.acquire(cctx, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled acquire = %v", err)
	}
	s.release()
	got := []int{<-order, <-order, <-order}
	if !slices.Equal(got, []int{2, 1, 0}) {
		t.Errorf("served %v, want [2 1 0]", got)
	}
}
