package fs

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/testenv"
)

// testLogger writes warnings and errors to stderr when -v is on, and
// nowhere otherwise: FUSE goroutines may log after a test has finished,
// when t.Log would panic.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// testOptions are DefaultOptions on store with a private staging dir.
func testOptions(t *testing.T, store blob.Store) Options {
	t.Helper()
	opts := DefaultOptions()
	opts.Store = store
	opts.StagingDir = t.TempDir()
	opts.Logger = testLogger()
	return opts
}

// mountT mounts opts at a fresh directory and unmounts it in t.Cleanup,
// even when the test fails, checking that no mount is left behind.
func mountT(t *testing.T, opts Options) (*Mounted, string) {
	t.Helper()
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	m, err := Mount(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 200*time.Millisecond {
				t.Logf("unmount took %v", d)
			}
		}()
		if err := m.Unmount(ctx); err != nil {
			t.Errorf("Unmount: %v", err)
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount: %v", err)
			}
		}
		if mounted(t, m.Dir()) {
			t.Errorf("%s still in /proc/mounts after Unmount", m.Dir())
		}
	})
	return m, m.Dir()
}

// mounted reports whether dir is a mountpoint in /proc/mounts.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/mounts")
	if err != nil {
		t.Fatalf("open /proc/mounts: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && fields[1] == dir {
			return true
		}
	}
	return false
}

// put stores data as blob name, failing the test on error.
func put(t *testing.T, s blob.Store, name string, data []byte) blob.Attrs {
	t.Helper()
	a, err := s.Put(context.Background(), name, data, blob.WriteOptions{})
	if err != nil {
		t.Fatalf("Put %q: %v", name, err)
	}
	return a
}

// blobData reads blob name whole, straight from the store.
func blobData(t *testing.T, s blob.Store, name string) []byte {
	t.Helper()
	ctx := context.Background()
	a, err := s.Stat(ctx, name)
	if err != nil {
		t.Fatalf("Stat %q: %v", name, err)
	}
	buf := make([]byte, a.Size)
	if _, err := s.ReadAt(ctx, name, "", buf, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt %q: %v", name, err)
	}
	return buf
}

// countingStore counts ranged reads and the bytes they returned.
type countingStore struct {
	blob.Store
	reads atomic.Int64
	bytes atomic.Int64
}

func (c *countingStore) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	n, err := c.Store.ReadAt(ctx, name, etag, p, off)
	c.reads.Add(1)
	c.bytes.Add(int64(n))
	return n, err
}

// faultStore fails every operation with err while armed (it starts
// disarmed so that Mount's probe passes).
type faultStore struct {
	blob.Store
	mu  sync.Mutex
	err error
}

func (f *faultStore) arm(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *faultStore) fault(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		return nil
	}
	return errors.Join(errors.New("injected fault in "+op), f.err)
}

func (f *faultStore) Stat(ctx context.Context, name string) (blob.Attrs, error) {
	if err := f.fault("stat"); err != nil {
		return blob.Attrs{}, err
	}
	return f.Store.Stat(ctx, name)
}

func (f *faultStore) List(ctx context.Context, opts blob.ListOptions) (blob.Page, error) {
	if err := f.fault("list"); err != nil {
		return blob.Page{}, err
	}
	return f.Store.List(ctx, opts)
}

func (f *faultStore) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	if err := f.fault("read"); err != nil {
		return 0, err
	}
	return f.Store.ReadAt(ctx, name, etag, p, off)
}

func (f *faultStore) Put(ctx context.Context, name string, data []byte, opts blob.WriteOptions) (blob.Attrs, error) {
	if err := f.fault("put"); err != nil {
		return blob.Attrs{}, err
	}
	return f.Store.Put(ctx, name, data, opts)
}

func (f *faultStore) Delete(ctx context.Context, name string, cond blob.Conditions) error {
	if err := f.fault("delete"); err != nil {
		return err
	}
	return f.Store.Delete(ctx, name, cond)
}
