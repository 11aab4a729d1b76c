package fs

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
	"github.com/blobfs/blobfs/internal/testenv"
)

// opStore counts the write-path requests a test asserts on, and can make
// StageBlock fail or hang.
type opStore struct {
	blob.Store
	stages, commits, puts, copies, blockLists atomic.Int64
	stagedBytes                               atomic.Int64

	mu        sync.Mutex
	stageErr  error         // returned by StageBlock while set
	stageHang chan struct{} // StageBlock waits on it (or ctx) while set
}

func (s *opStore) StageBlock(ctx context.Context, name, id string, data []byte) error {
	s.mu.Lock()
	err, hang := s.stageErr, s.stageHang
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	s.stages.Add(1)
	s.stagedBytes.Add(int64(len(data)))
	return s.Store.StageBlock(ctx, name, id, data)
}

func (s *opStore) CommitBlocks(ctx context.Context, name string, ids []string, opts blob.WriteOptions) (blob.Attrs, error) {
	s.commits.Add(1)
	return s.Store.CommitBlocks(ctx, name, ids, opts)
}

func (s *opStore) Put(ctx context.Context, name string, data []byte, opts blob.WriteOptions) (blob.Attrs, error) {
	s.puts.Add(1)
	return s.Store.Put(ctx, name, data, opts)
}

func (s *opStore) Copy(ctx context.Context, src string, etag blob.ETag, dst string, opts blob.WriteOptions) (blob.Attrs, error) {
	s.copies.Add(1)
	return s.Store.Copy(ctx, src, etag, dst, opts)
}

func (s *opStore) Blocks(ctx context.Context, name string) ([]blob.Block, error) {
	s.blockLists.Add(1)
	return s.Store.Blocks(ctx, name)
}

const testBS = 64 << 10

func newWriteVolume(t *testing.T, s blob.Store, mutate func(*Options)) *Volume {
	return newVolume(t, s, func(o *Options) {
		o.BlockSize = testBS
		o.Concurrency = 4
		if mutate != nil {
			mutate(o)
		}
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func createT(t *testing.T, v *Volume, name string) *Handle {
	t.Helper()
	h, err := v.Create(ctxT(t), name, syscall.O_RDWR)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return h
}

func writeAll(t *testing.T, h *Handle, data []byte, off int64, chunk int) {
	t.Helper()
	for done := 0; done < len(data); {
		n := min(chunk, len(data)-done)
		if _, err := h.WriteAt(ctxT(t), data[done:done+n], off+int64(done)); err != nil {
			t.Fatalf("write at %d: %v", off+int64(done), err)
		}
		done += n
	}
}

// A sequential writer's full blocks are uploaded while it writes; the
// blob is untouched (readers see the old version) until the commit.
func TestStreamingStagesBeforeClose(t *testing.T) {
	mem := memblob.New()
	s := &opStore{Store: mem}
	v := newWriteVolume(t, s, nil)
	old := put(t, s, "ckpt.bin", []byte("old checkpoint"))
	data := pseudoRandomBytes(1, 10*testBS+123)

	h, err := v.Open(ctxT(t), "ckpt.bin", syscall.O_WRONLY|syscall.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, h, data, 0, 32<<10)
	// Background stages finish on their own; wait for them without
	// committing.
	h.st.mu.Lock()
	err = h.st.sess.waitIdle(ctxT(t))
	h.st.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := s.stages.Load(); got < 9 {
		t.Errorf("blocks staged before close = %d, want >= 9 of the 10 full blocks", got)
	}
	if got := v.WriteStats().StagedInBackground; got < 9 {
		t.Errorf("StagedInBackground = %d, want >= 9", got)
	}
	if a, err := s.Stat(ctxT(t), "ckpt.bin"); err != nil || a.ETag != old.ETag {
		t.Fatalf("blob before close: %+v, %v; want the old version still", a, err)
	}
	stagesBefore := s.stages.Load()
	if err := h.Fsync(ctxT(t)); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if got := s.stages.Load() - stagesBefore; got > 2 {
		t.Errorf("fsync staged %d blocks, want only the tail (<= 2)", got)
	}
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	got := blobData(t, s, "ckpt.bin")
	if !bytes.Equal(got, data) {
		t.Fatalf("committed content differs (len %d vs %d)", len(got), len(data))
	}
	a, _ := s.Stat(ctxT(t), "ckpt.bin")
	if sum := md5.Sum(data); !bytes.Equal(a.ContentMD5, sum[:]) {
		t.Errorf("Content-MD5 = %x, want %x", a.ContentMD5, sum)
	}
}

// Changing one byte in the middle of a block-list blob re-uploads one
// block; the others are committed again by id.
func TestPatchRestagesOnlyChangedBlocks(t *testing.T) {
	mem := memblob.New()
	s := &opStore{Store: mem}
	v := newWriteVolume(t, s, nil)
	data := pseudoRandomBytes(2, 8*testBS)
	h := createT(t, v, "big")
	writeAll(t, h, data, 0, testBS)
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	before, err := s.Blocks(ctxT(t), "big")
	if err != nil || len(before) != 8 {
		t.Fatalf("block list after first commit: %d blocks, %v", len(before), err)
	}
	s.stages.Store(0)
	s.stagedBytes.Store(0)

	h, err = v.Open(ctxT(t), "big", syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(ctxT(t), []byte("PATCH"), 3*testBS+100); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	copy(data[3*testBS+100:], "PATCH")
	if got := blobData(t, s, "big"); !bytes.Equal(got, data) {
		t.Fatal("patched content differs")
	}
	if n, b := s.stages.Load(), s.stagedBytes.Load(); n != 1 || b != testBS {
		t.Errorf("patch staged %d blocks / %d bytes, want 1 / %d", n, b, testBS)
	}
	after, _ := s.Blocks(ctxT(t), "big")
	for i := range after {
		if (i == 3) == (after[i].ID == before[i].ID) {
			t.Errorf("block %d: id before %s after %s (only block 3 should change)", i, before[i].ID, after[i].ID)
		}
	}
}

// Logging (TensorBoard events, Ray's result.json): many small appends,
// each flushed. The tail block is re-staged, never a block per flush.
func TestSmallAppendsStayUnderBlockLimit(t *testing.T) {
	mem := memblob.New()
	s := &opStore{Store: mem}
	v := newWriteVolume(t, s, func(o *Options) { o.BlockSize = 4096 })
	cycles := testenv.Pick(2000, 20000)
	h, err := v.Create(ctxT(t), "events.log", syscall.O_WRONLY|syscall.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := range cycles {
		line := fmt.Appendf(nil, "step=%d loss=%.4f\n", i, 1/float64(i+1))
		if _, err := h.WriteAt(ctxT(t), line, 0); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		want.Write(line)
		if err := h.Flush(ctxT(t)); err != nil {
			t.Fatalf("flush %d: %v", i, err)
		}
	}
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "events.log"); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("log content differs: %d bytes vs %d", len(got), want.Len())
	}
	blocks, err := s.Blocks(ctxT(t), "events.log")
	if err != nil {
		t.Fatal(err)
	}
	wantBlocks := (want.Len() + 4095) / 4096
	if len(blocks) != wantBlocks || len(blocks) >= blob.MaxBlockCount {
		t.Errorf("%d appends: %d committed blocks, want %d (one per 4 KiB, not one per flush)", cycles, len(blocks), wantBlocks)
	}
	if staged := s.stagedBytes.Load(); staged > int64(cycles)*4096+int64(want.Len()) {
		t.Errorf("staged %d bytes for a %d-byte log: more than the tail per flush", staged, want.Len())
	}
}

// Two mounts write one file: the second commit loses with ESTALE, its
// data is not interleaved, and the winner's content stays.
func TestTwoWritersSecondCommitFails(t *testing.T) {
	mem := memblob.New()
	put(t, mem, "shared", []byte("v0"))
	a := newWriteVolume(t, mem, nil)
	b := newWriteVolume(t, mem, nil)
	ha, err := a.Open(ctxT(t), "shared", syscall.O_RDWR|syscall.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := b.Open(ctxT(t), "shared", syscall.O_RDWR|syscall.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, ha, bytes.Repeat([]byte("A"), 3*testBS), 0, testBS)
	writeAll(t, hb, bytes.Repeat([]byte("B"), 3*testBS), 0, testBS)
	if err := ha.Release(ctxT(t)); err != nil {
		t.Fatalf("first writer's close: %v", err)
	}
	err = hb.Flush(ctxT(t))
	if !errors.Is(err, blob.ErrStale) {
		t.Fatalf("second writer's close: %v, want ErrStale", err)
	}
	if errno := b.errno("flush", "shared", err); errno != syscall.ESTALE {
		t.Errorf("errno = %v, want ESTALE", errno)
	}
	_ = hb.Release(ctxT(t))
	if got := blobData(t, mem, "shared"); !bytes.Equal(got, bytes.Repeat([]byte("A"), 3*testBS)) {
		t.Fatalf("content after the race is not the winner's whole file")
	}
}

// DCP's finish: write .metadata.tmp, fsync, close, rename to .metadata.
// The rename commits local bytes under the new name: no server-side copy.
// A file renamed before its first commit is committed under the new name
// only.
func TestWriteTempThenRenameNeedsNoCopy(t *testing.T) {
	mem := memblob.New()
	s := &opStore{Store: mem}
	v := newWriteVolume(t, s, nil)
	meta := pseudoRandomBytes(3, 3*testBS+7)
	h := createT(t, v, "step-100/.metadata.tmp")
	writeAll(t, h, meta, 0, 4096)
	if err := h.Fsync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := v.Rename(ctxT(t), "step-100/.metadata.tmp", "step-100/.metadata", false); err != nil {
		t.Fatal(err)
	}
	// Renamed while still open and never committed.
	shard := pseudoRandomBytes(4, 5*testBS)
	h = createT(t, v, "step-100/shard.tmp")
	writeAll(t, h, shard, 0, 8192)
	if err := v.Rename(ctxT(t), "step-100/shard.tmp", "step-100/__0_0.distcp", false); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := s.copies.Load(); n != 0 {
		t.Errorf("%d server-side copies, want 0", n)
	}
	if n := v.WriteStats().RenamesFromLocal; n != 1 {
		t.Errorf("RenamesFromLocal = %d, want 1", n)
	}
	page, err := s.List(ctxT(t), blob.ListOptions{Prefix: "step-100/"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range page.Blobs {
		names = append(names, b.Name)
	}
	if fmt.Sprint(names) != "[step-100/.metadata step-100/__0_0.distcp]" {
		t.Errorf("blobs = %v, want exactly the final names", names)
	}
	if !bytes.Equal(blobData(t, s, "step-100/.metadata"), meta) || !bytes.Equal(blobData(t, s, "step-100/__0_0.distcp"), shard) {
		t.Error("renamed content differs")
	}
	// A rename of a file written elsewhere still copies.
	put(t, s, "other", []byte("from another mount"))
	if err := v.Rename(ctxT(t), "other", "other2", false); err != nil {
		t.Fatal(err)
	}
	if n := s.copies.Load(); n != 1 {
		t.Errorf("rename of a foreign file: %d copies, want 1", n)
	}
}

// A background stage that fails is reported at the next write, and the
// file (which the application knows is incomplete) is never committed.
func TestFailedStageFailsWriteAndNeverCommits(t *testing.T) {
	mem := memblob.New()
	s := &opStore{Store: mem}
	v := newWriteVolume(t, s, nil)
	old := put(t, s, "f", []byte("intact"))
	h, err := v.Open(ctxT(t), "f", syscall.O_WRONLY|syscall.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.stageErr = fmt.Errorf("injected: %w", blob.ErrUnavailable)
	s.mu.Unlock()
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = h.WriteAt(ctxT(t), make([]byte, testBS), int64(i)*testBS)
		if werr == nil {
			h.st.mu.Lock()
			_ = h.st.sess.waitIdle(ctxT(t))
			h.st.mu.Unlock()
		}
	}
	if !errors.Is(werr, blob.ErrUnavailable) {
		t.Fatalf("write after a failed stage: %v, want ErrUnavailable", werr)
	}
	s.mu.Lock()
	s.stageErr = nil
	s.mu.Unlock()
	if err := h.Fsync(ctxT(t)); err == nil {
		t.Fatal("fsync after a failed write succeeded; it must not commit an incomplete file")
	}
	_ = h.Release(ctxT(t))
	if a, err := s.Stat(ctxT(t), "f"); err != nil || a.ETag != old.ETag {
		t.Fatalf("blob after failed writes: %+v %v, want the old version", a, err)
	}
}

// A backend that stops answering fails the commit within UploadTimeout.
func TestDeadBackendFailsWithinUploadTimeout(t *testing.T) {
	mem := memblob.New()
	s := &opStore{Store: mem}
	v := newWriteVolume(t, s, func(o *Options) { o.UploadTimeout = 300 * time.Millisecond })
	h := createT(t, v, "f")
	writeAll(t, h, pseudoRandomBytes(5, testBS/2), 0, 4096)
	hang := make(chan struct{})
	defer close(hang)
	s.mu.Lock()
	s.stageHang = hang
	s.mu.Unlock()
	writeAll(t, h, pseudoRandomBytes(6, 2*testBS), testBS/2, 4096)
	done := make(chan error, 1)
	go func() { done <- h.Flush(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("flush against a hung backend: %v, want a deadline error", err)
		}
		if errno := v.errno("flush", "f", err); errno != syscall.EIO && errno != syscall.ETIMEDOUT {
			t.Errorf("errno %v, want EIO or ETIMEDOUT", errno)
		}
	case <-time.After(time.Minute):
		t.Fatal("flush against a hung backend did not return")
	}
	_ = h.Release(ctxT(t))
}

// fsx: random writes, truncates, reads, flushes and reopens against an
// in-memory model; every read and every committed blob must match it.
func TestRandomOperationsMatchModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { fsx(t, seed, testenv.Pick(3000, 20000)) })
	}
}

func fsx(t *testing.T, seed uint64, ops int) {
	mem := memblob.New()
	v := newWriteVolume(t, mem, func(o *Options) { o.BlockSize = 4096 })
	rng := rand.New(rand.NewPCG(seed, seed*7))
	var model []byte
	h := createT(t, v, "fsx")
	defer func() { _ = h.Release(ctxT(t)) }()
	const maxLen = 20 * 4096
	check := func(op int, what string) {
		got := make([]byte, len(model)+100)
		n, err := h.ReadAt(ctxT(t), got, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("op %d (%s): read: %v", op, what, err)
		}
		if !bytes.Equal(got[:n], model) {
			t.Fatalf("op %d (%s): content differs from model (len %d vs %d)", op, what, n, len(model))
		}
	}
	for op := range ops {
		switch k := rng.IntN(100); {
		case k < 45:
			off := rng.Int64N(maxLen)
			n := 1 + rng.IntN(3*4096)
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if _, err := h.WriteAt(ctxT(t), p, off); err != nil {
				t.Fatalf("op %d: write: %v", op, err)
			}
			if end := int(off) + n; end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[off:], p)
		case k < 55:
			size := rng.Int64N(maxLen)
			if err := h.Truncate(ctxT(t), size); err != nil {
				t.Fatalf("op %d: truncate: %v", op, err)
			}
			if int(size) <= len(model) {
				model = model[:size]
			} else {
				model = append(model, make([]byte, int(size)-len(model))...)
			}
		case k < 75:
			off := rng.Int64N(maxLen)
			p := make([]byte, 1+rng.IntN(3*4096))
			n, err := h.ReadAt(ctxT(t), p, off)
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("op %d: read: %v", op, err)
			}
			var want []byte
			if int(off) < len(model) {
				want = model[off:min(len(model), int(off)+len(p))]
			}
			if !bytes.Equal(p[:n], want) {
				t.Fatalf("op %d: read at %d: %d bytes differ from the model's %d", op, off, n, len(want))
			}
		case k < 90:
			if err := h.Flush(ctxT(t)); err != nil {
				t.Fatalf("op %d: flush: %v", op, err)
			}
			if got := blobData(t, mem, "fsx"); !bytes.Equal(got, model) {
				t.Fatalf("op %d: committed blob differs from model (len %d vs %d)", op, len(got), len(model))
			}
		default:
			if err := h.Release(ctxT(t)); err != nil {
				t.Fatalf("op %d: close: %v", op, err)
			}
			var err error
			if h, err = v.Open(ctxT(t), "fsx", syscall.O_RDWR); err != nil {
				t.Fatalf("op %d: reopen: %v", op, err)
			}
			check(op, "reopen")
		}
	}
	check(ops, "end")
}

func pseudoRandomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// A directory rename beyond the entry limit is refused with EXDEV (mv then
// copies) and moves nothing.
func TestDirectoryRenameLimit(t *testing.T) {
	mem := memblob.New()
	v := newWriteVolume(t, mem, func(o *Options) { o.MaxRenameDirEntries = 3 })
	for i := range 4 {
		put(t, mem, fmt.Sprintf("big/f%d", i), []byte("x"))
	}
	put(t, mem, "small/a", []byte("a"))
	err := v.Rename(ctxT(t), "big", "big2", false)
	if !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("rename of a 4-entry directory with limit 3: %v, want EXDEV", err)
	}
	if page, _ := mem.List(ctxT(t), blob.ListOptions{Prefix: "big2/"}); len(page.Blobs) != 0 {
		t.Errorf("refused rename moved %d blobs", len(page.Blobs))
	}
	if err := v.Rename(ctxT(t), "small", "small2", false); err != nil {
		t.Fatalf("rename under the limit: %v", err)
	}
	if got := blobData(t, mem, "small2/a"); string(got) != "a" {
		t.Errorf("small2/a = %q", got)
	}
}
