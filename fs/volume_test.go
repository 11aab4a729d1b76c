package fs

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
)

// Volume tests run without FUSE: the rules live in Volume, so they are
// checked here directly and again through the kernel in mount_test.go.

func newVolume(t *testing.T, s blob.Store, mutate func(*Options)) *Volume {
	t.Helper()
	opts := testOptions(t, s)
	if mutate != nil {
		mutate(&opts)
	}
	v, err := NewVolume(context.Background(), opts)
	if err != nil {
		t.Fatalf("NewVolume: %v", err)
	}
	t.Cleanup(func() { v.Close(context.Background()) })
	return v
}

func TestOptionsValidate(t *testing.T) {
	s := memblob.New()
	ok := DefaultOptions()
	ok.Store = s
	if err := ok.Validate(); err != nil {
		t.Fatalf("default options: %v", err)
	}
	if err := (Options{Store: s}).Validate(); err != nil {
		t.Errorf("zero options with a store: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Options)
	}{
		{"no store", func(o *Options) { o.Store = nil }},
		{"umask", func(o *Options) { o.Umask = 0o1000 }},
		{"negative ttl", func(o *Options) { o.AttrTTL = -time.Second }},
		{"max write", func(o *Options) { o.MaxWrite = 100 }},
		{"max background", func(o *Options) { o.MaxBackground = 70000 }},
		{"block size", func(o *Options) { o.BlockSize = blob.MaxBlockSize + 1 }},
		{"concurrency", func(o *Options) { o.Concurrency = -1 }},
		{"readahead", func(o *Options) { o.ReadAheadKB = -1 }},
	}
	for _, tt := range tests {
		o := ok
		tt.mutate(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", tt.name, o)
		}
	}
}

func TestVolumeMissingContainer(t *testing.T) {
	opts := testOptions(t, memblob.NewMissing())
	_, err := NewVolume(context.Background(), opts)
	if !errors.Is(err, blob.ErrContainerNotFound) {
		t.Fatalf("NewVolume on a missing container: %v, want ErrContainerNotFound", err)
	}
}

func TestVolumeLookupKinds(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	put(t, s, "file", []byte("abc"))
	put(t, s, "implicit/x", nil)
	if _, err := s.Put(ctx, "explicit", nil, blob.WriteOptions{Metadata: map[string]string{blob.MetaIsFolder: "true"}}); err != nil {
		t.Fatal(err)
	}
	put(t, s, "shadow", []byte("f"))
	put(t, s, "shadow/child", nil)
	v := newVolume(t, s, nil)

	for _, tt := range []struct {
		name        string
		dir, marker bool
		size        int64
	}{
		{"file", false, false, 3},
		{"implicit", true, false, 0},
		{"explicit", true, true, 0},
		{"shadow", false, false, 1}, // a blob shadows a same-named prefix
	} {
		e, err := v.Lookup(ctx, tt.name)
		if err != nil || e.Dir != tt.dir || e.Marker != tt.marker || e.Size != tt.size {
			t.Errorf("Lookup(%q) = %+v, %v", tt.name, e, err)
		}
	}
	if _, err := v.Lookup(ctx, "missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Lookup(missing) = %v", err)
	}
	ents, err := v.ReadDir(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range ents {
		kind := "f"
		if de.Dir {
			kind = "d"
		}
		names = append(names, de.Name+":"+kind)
	}
	if got, want := strings.Join(names, " "), "explicit:d file:f implicit:d shadow:f"; got != want {
		t.Errorf("ReadDir = %s, want %s", got, want)
	}
}

func TestVolumeReadOnlyRefusesEveryMutation(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	put(t, s, "f", []byte("data"))
	put(t, s, "d/x", nil)
	v := newVolume(t, s, func(o *Options) { o.ReadOnly = true })
	h, err := v.Open(ctx, "f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	ops := map[string]func() error{
		"create":     func() error { _, err := v.Create(ctx, "g", syscall.O_WRONLY); return err },
		"open write": func() error { _, err := v.Open(ctx, "f", syscall.O_RDWR); return err },
		"open trunc": func() error { _, err := v.Open(ctx, "f", syscall.O_RDONLY|syscall.O_TRUNC); return err },
		"mkdir":      func() error { _, err := v.Mkdir(ctx, "e"); return err },
		"rmdir":      func() error { return v.Rmdir(ctx, "d") },
		"unlink":     func() error { return v.Unlink(ctx, "f") },
		"rename":     func() error { return v.Rename(ctx, "f", "g", false) },
		"truncate":   func() error { return v.Truncate(ctx, "f", 0) },
		"write":      func() error { _, err := h.WriteAt(ctx, []byte("x"), 0); return err },
		"ftruncate":  func() error { return h.Truncate(ctx, 1) },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only volume: %v, want EROFS", name, err)
		}
	}
	if got := blobData(t, s, "f"); string(got) != "data" {
		t.Errorf("read-only volume changed f to %q", got)
	}
}

func TestVolumeWriteSessionUploadsInBlocks(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	v := newVolume(t, s, func(o *Options) { o.BlockSize = 4096; o.Concurrency = 3 })
	h, err := v.Create(ctx, "big", syscall.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes: 4 blocks
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if e := h.Entry(); e.Size != int64(len(data)) {
		t.Errorf("Entry while dirty: size %d, want %d", e.Size, len(data))
	}
	if e, _ := v.Lookup(ctx, "big"); e.Size != int64(len(data)) {
		t.Errorf("Lookup while dirty: size %d, want %d", e.Size, len(data))
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "big"); !bytes.Equal(got, data) {
		t.Fatalf("uploaded %d bytes, want %d", len(got), len(data))
	}
	blocks, err := s.Blocks(ctx, "big")
	if err != nil || len(blocks) != 4 {
		t.Errorf("Blocks = %v, %v; want 4 blocks", blocks, err)
	}
}

func TestVolumeUnlinkOpenFileIsNotResurrected(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	v := newVolume(t, s, nil)
	h, err := v.Create(ctx, "f", syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(ctx, []byte("unsaved"), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Unlink(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	// The open handle still reads its content…
	buf := make([]byte, 7)
	if n, err := h.ReadAt(ctx, buf, 0); err != nil || string(buf[:n]) != "unsaved" {
		t.Errorf("read after unlink = %q, %v", buf[:n], err)
	}
	// …but closing it uploads nothing.
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	h.Release(ctx)
	if _, err := s.Stat(ctx, "f"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("unlinked file came back: %v", err)
	}
}

// TestVolumeConcurrentStress mixes every operation on a few names from many
// goroutines; run with -race it checks the lock order and the shared state.
func TestVolumeConcurrentStress(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	v := newVolume(t, s, func(o *Options) { o.BlockSize = 4096 })
	names := []string{"a", "b", "d/c", "d/e"}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 200 {
				name := names[r.IntN(len(names))]
				switch r.IntN(7) {
				case 0, 1:
					h, err := v.Create(ctx, name, syscall.O_RDWR)
					if err != nil {
						continue
					}
					h.WriteAt(ctx, bytes.Repeat([]byte{byte(w)}, r.IntN(10000)), int64(r.IntN(100)))
					if r.IntN(2) == 0 {
						h.Flush(ctx)
					}
					buf := make([]byte, 100)
					h.ReadAt(ctx, buf, 0)
					h.Release(ctx)
				case 2:
					if h, err := v.Open(ctx, name, syscall.O_RDONLY); err == nil {
						h.ReadAt(ctx, make([]byte, 5000), 0)
						h.Release(ctx)
					}
				case 3:
					v.Unlink(ctx, name)
				case 4:
					v.Rename(ctx, name, names[r.IntN(len(names))], r.IntN(2) == 0)
				case 5:
					v.Lookup(ctx, name)
					v.ReadDir(ctx, "d")
				case 6:
					v.Truncate(ctx, name, int64(r.IntN(5000)))
				}
			}
		})
	}
	wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.open) != 0 {
		t.Errorf("%d files still open after every handle was released: %v", len(v.open), v.open)
	}
}

// sizedReader records the sizes it is told.
type sizedReader struct {
	blob.Store
	sizes []int64
}

func (r *sizedReader) ReadAtSized(ctx context.Context, name string, etag blob.ETag, size int64, p []byte, off int64) (int, error) {
	r.sizes = append(r.sizes, size)
	return r.Store.ReadAt(ctx, name, etag, p, off)
}

// A Reader that wants the size (the block cache) is preferred and told the
// size of the version the file was opened at.
func TestSizedReaderGetsSize(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	if _, err := s.Put(ctx, "f", []byte("0123456789"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	r := &sizedReader{Store: s}
	v := newVolume(t, s, func(o *Options) { o.Reader = r })
	h, err := v.Open(ctx, "f", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	p := make([]byte, 4)
	if n, err := h.ReadAt(ctx, p, 3); err != nil || string(p[:n]) != "3456" {
		t.Fatalf("read = %q, %v", p[:n], err)
	}
	if len(r.sizes) != 1 || r.sizes[0] != 10 {
		t.Fatalf("sizes told = %v, want [10]", r.sizes)
	}
}

// archivedStore reports every blob in the Archive tier.
type archivedStore struct{ blob.Store }

func (s archivedStore) Stat(ctx context.Context, name string) (blob.Attrs, error) {
	a, err := s.Store.Stat(ctx, name)
	a.AccessTier = blob.TierArchive
	return a, err
}

func (s archivedStore) List(ctx context.Context, o blob.ListOptions) (blob.Page, error) {
	p, err := s.Store.List(ctx, o)
	for i := range p.Blobs {
		p.Blobs[i].AccessTier = blob.TierArchive
	}
	return p, err
}

// An archived blob is listed and stat-able, but opening it to read fails
// with EACCES and an error naming the tier; replacing it is allowed.
func TestArchivedBlob(t *testing.T) {
	ctx := context.Background()
	mem := memblob.New()
	if _, err := mem.Put(ctx, "old/shard.tar", []byte("cold data"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	v := newVolume(t, archivedStore{mem}, nil)
	e, err := v.Lookup(ctx, "old/shard.tar")
	if err != nil || !e.Archived || e.Size != 9 {
		t.Fatalf("Lookup = %+v, %v", e, err)
	}
	_, err = v.Open(ctx, "old/shard.tar", os.O_RDONLY)
	if !errors.Is(err, blob.ErrArchived) || toErrno(err) != syscall.EACCES || !strings.Contains(err.Error(), "Archive") {
		t.Fatalf("open of an archived blob: %v (errno %v), want EACCES naming the tier", err, toErrno(err))
	}
	h, err := v.Open(ctx, "old/shard.tar", os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		t.Fatalf("O_TRUNC over an archived blob: %v", err)
	}
	h.Release(ctx)
}
