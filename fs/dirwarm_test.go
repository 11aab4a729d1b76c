package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
)

func warmFixture(t *testing.T, files, pageSize int, mutate func(*Options)) (*Volume, *statCounter) {
	t.Helper()
	s := &statCounter{Store: memblob.New(), pageSize: pageSize}
	for i := range files {
		put(t, s, fmt.Sprintf("train/f%03d", i), []byte("x"))
	}
	return newVolume(t, s, mutate), s
}

func waitWarm(t *testing.T, v *Volume, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for v.stats.dirWarmups.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("directory not warmed after 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Opening many files of a directory without listing it costs a HEAD for
// the first two only: the second miss lists the directory in the
// background, and the listing answers the rest, missing names included.
func TestLookupMissesWarmTheDirectory(t *testing.T) {
	ctx := context.Background()
	v, s := warmFixture(t, 50, 20, nil)
	for i := range 2 {
		if _, err := v.Lookup(ctx, fmt.Sprintf("train/f%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitWarm(t, v, 1)
	stats := s.stats.Load()
	for i := 2; i < 50; i++ {
		e, err := v.Lookup(ctx, fmt.Sprintf("train/f%03d", i))
		if err != nil || e.Size != 1 || e.Dir {
			t.Fatalf("lookup f%03d: %+v, %v", i, e, err)
		}
	}
	if _, err := v.Lookup(ctx, "train/missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing name: %v, want ErrNotFound", err)
	}
	if got := s.stats.Load() - stats; got != 0 {
		t.Errorf("%d HEADs after the warm-up, want 0", got)
	}
	if got := s.lists.Load(); got != 3+1 {
		t.Errorf("%d listing pages, want 3 (50 entries) + the mount's probe", got)
	}
}

// A name missing from the listing is only trusted for NegativeTTL: a file
// created elsewhere shows up as soon as it would without a listing.
func TestWarmListingHonoursNegativeTTL(t *testing.T) {
	ctx := context.Background()
	v, s := warmFixture(t, 5, 20, func(o *Options) { o.NegativeTTL = 0 })
	v.Lookup(ctx, "train/f000")
	v.Lookup(ctx, "train/f001")
	waitWarm(t, v, 1)
	put(t, s.Store, "train/new", []byte("y"))
	if e, err := v.Lookup(ctx, "train/new"); err != nil || e.Size != 1 {
		t.Fatalf("a file created after the listing: %+v, %v", e, err)
	}
}

// A directory longer than the warm-up bound is not cached, and its
// lookups keep their HEADs; it is not listed again at every miss.
func TestWarmUpSkipsLongDirectories(t *testing.T) {
	ctx := context.Background()
	v, s := warmFixture(t, 50, 10, nil)
	v.warmMaxPages = 2 // 20 entries
	for i := range 10 {
		if _, err := v.Lookup(ctx, fmt.Sprintf("train/f%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		v.mu.Lock()
		w := v.warm["train"]
		done := w != nil && !w.listing && !w.notBefore.IsZero()
		v.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("warm-up of a long directory never gave up")
		}
		time.Sleep(time.Millisecond)
	}
	if got := s.stats.Load(); got != 10 {
		t.Errorf("%d HEADs for 10 lookups, want 10", got)
	}
	if got := s.lists.Load(); got != 2+1 {
		t.Errorf("%d listing pages, want 2 (the bound) + the probe", got)
	}
	if v.stats.dirWarmups.Load() != 0 {
		t.Error("a directory over the bound was cached")
	}
}

// A read that finds the blob replaced (ErrStale) makes the next open look
// again, also when a listing of its directory answers lookups.
func TestStaleReadDropsTheListing(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	put(t, s, "d/v", []byte("11111111"))
	v := newVolume(t, s, nil)
	if _, err := v.ReadDir(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	h, err := v.Open(ctx, "d/v", 0)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "d/v", []byte("22222222")) // replaced by another writer
	if _, err := h.ReadAt(ctx, make([]byte, 8), 0); !errors.Is(err, blob.ErrStale) {
		t.Fatalf("read of a replaced blob: %v, want ErrStale", err)
	}
	h.Release(ctx)
	h, err = v.Open(ctx, "d/v", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	p := make([]byte, 8)
	if _, err := h.ReadAt(ctx, p, 0); err != nil || string(p) != "22222222" {
		t.Fatalf("reopen after ErrStale: %q, %v; want the new content", p, err)
	}
}

// A data loader's workers open their first files all at once: the lookups
// that miss while the warm-up listing runs wait for it instead of each
// sending a HEAD, so 16 concurrent first lookups cost one HEAD (the first
// miss) and one listing.
func TestConcurrentLookupsWaitForTheWarmUp(t *testing.T) {
	ctx := context.Background()
	v, s := warmFixture(t, 50, 100, nil)
	s.listDelay = 50 * time.Millisecond
	lists := s.lists.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			e, err := v.Lookup(ctx, fmt.Sprintf("train/f%03d", i))
			if err == nil && (e.Size != 1 || e.Dir) {
				err = fmt.Errorf("f%03d: %+v", i, e)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.stats.Load(); got != 1 {
		t.Errorf("%d HEADs for 16 concurrent lookups, want 1 (the first miss)", got)
	}
	if got := s.lists.Load() - lists; got != 1 {
		t.Errorf("%d listing pages, want 1", got)
	}
	// A name the listing does not have is answered by it too.
	if _, err := v.Lookup(ctx, "train/missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing name: %v, want ErrNotFound", err)
	}
	if got := s.stats.Load(); got != 1 {
		t.Errorf("%d HEADs after a missing name, want 1", got)
	}
}
