package fs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
)

// benchMount mounts store for a benchmark (mountT needs a *testing.T).
func benchMount(b *testing.B, store blob.Store) string {
	b.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		b.Skip("needs /dev/fuse and root")
	}
	opts := DefaultOptions()
	opts.Store = store
	opts.StagingDir = b.TempDir()
	opts.Logger = testLogger()
	dir := b.TempDir()
	m, err := Mount(context.Background(), dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := m.Unmount(context.Background()); err != nil {
			b.Errorf("Unmount: %v", err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// BenchmarkMountSequentialRead reads a 64 MiB blob through the kernel with
// 1 MiB reads, the page cache dropped before each pass: the FUSE read path
// with memblob as an (almost) free backend.
func BenchmarkMountSequentialRead(b *testing.B) {
	const size = 64 << 20
	s := memblob.New()
	if _, err := s.Put(context.Background(), "big", randomBytes(8, size), blob.WriteOptions{}); err != nil {
		b.Fatal(err)
	}
	dir := benchMount(b, s)
	buf := make([]byte, 1<<20)
	b.SetBytes(size)
	for b.Loop() {
		f, err := os.Open(filepath.Join(dir, "big"))
		if err != nil {
			b.Fatal(err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		f.Close()
		if err != nil || n != size {
			b.Fatalf("read %d, %v", n, err)
		}
	}
}

// BenchmarkMountSequentialWrite writes a 64 MiB file with 1 MiB writes and
// closes it (upload included).
func BenchmarkMountSequentialWrite(b *testing.B) {
	const size = 64 << 20
	dir := benchMount(b, memblob.New())
	data := randomBytes(9, 1<<20)
	b.SetBytes(size)
	i := 0
	for b.Loop() {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("w%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		for range size / len(data) {
			if _, err := f.Write(data); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
