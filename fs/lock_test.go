package fs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/blob/memblob"
	"github.com/blobfs/blobfs/internal/testenv"
)

// Locks work within the node: the kernel keeps flock and POSIX locks for a
// FUSE filesystem that does not implement them (blobfs claims neither lock
// capability), which is what Python's filelock and HF's download lock
// need. A second open file description cannot take a held exclusive lock.
func TestFlockWithinNode(t *testing.T) {
	testenv.RequireFUSE(t)
	opts := DefaultOptions()
	opts.Store = memblob.New()
	_, dir := mountT(t, opts)
	p := filepath.Join(dir, "model.lock")
	a, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := unix.Flock(int(a.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("first flock: %v", err)
	}
	if err := unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("second flock while held: %v, want EWOULDBLOCK", err)
	}
	if err := unix.Flock(int(a.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("flock after release: %v", err)
	}
	// A POSIX record lock can be taken too (fcntl F_SETLK).
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(a.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatalf("fcntl F_SETLK: %v", err)
	}
}
