package fs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
	"github.com/blobfs/blobfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// holdingStore keeps Stat, List and ReadAt of names under "held/" waiting
// until release, or until their context ends.
type holdingStore struct {
	blob.Store
	mu      sync.Mutex
	gate    chan struct{} // GUARDED_BY(mu); nil: nothing held
	waiting chan struct{} // one send per call that starts waiting
}

func newHoldingStore(s blob.Store) *holdingStore {
	return &holdingStore{Store: s, waiting: make(chan struct{}, 100)}
}

// hold starts holding; the returned func lets every held call go.
func (h *holdingStore) hold() (release func()) {
	gate := make(chan struct{})
	h.mu.Lock()
	h.gate = gate
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.gate = nil
			h.mu.Unlock()
			close(gate)
		})
	}
}

func (h *holdingStore) wait(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, "held/") && name != "held" {
		return nil
	}
	h.mu.Lock()
	gate := h.gate
	h.mu.Unlock()
	if gate == nil {
		return nil
	}
	h.waiting <- struct{}{}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *holdingStore) Stat(ctx context.Context, name string) (blob.Attrs, error) {
	if err := h.wait(ctx, name); err != nil {
		return blob.Attrs{}, err
	}
	return h.Store.Stat(ctx, name)
}

func (h *holdingStore) List(ctx context.Context, opts blob.ListOptions) (blob.Page, error) {
	if err := h.wait(ctx, opts.Prefix); err != nil {
		return blob.Page{}, err
	}
	return h.Store.List(ctx, opts)
}

func (h *holdingStore) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	if err := h.wait(ctx, name); err != nil {
		return 0, err
	}
	return h.Store.ReadAt(ctx, name, etag, p, off)
}

// signalWhileHeld runs op on its own thread while store holds its
// requests, sends that thread SIGURG (the Go runtime's preemption signal,
// which it handles) a few times once op waits on the store, and returns
// whether op returned while still held, and its result.
func signalWhileHeld(t *testing.T, store *holdingStore, op func() error) (returnedWhileHeld bool, err error) {
	t.Helper()
	release := store.hold()
	defer release()
	tid, done := testenv.OnLockedThread(op)
	select {
	case <-store.waiting:
	case err := <-done:
		t.Fatalf("returned before reaching the store: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("never reached the store")
	}
	if returned, err := testenv.SignalThread(t, tid, unix.SIGURG, 10, 10*time.Millisecond, done); returned {
		return true, err
	}
	release()
	select {
	case err := <-done:
		return false, err
	case <-time.After(20 * time.Second):
		t.Fatal("no answer after the store was let go")
		return false, nil
	}
}

// TestMountHandledSignalsDoNotInterruptLookupsAndReads: a lookup and a
// read that wait on the store while their caller is signalled with a
// signal it handles finish with the right answer; neither glibc nor
// x/sys/unix retries EINTR, so these are raw system calls. With
// InterruptOnAnySignal the same calls fail with EINTR, which shows the
// signals do reach the daemon.
func TestMountHandledSignalsDoNotInterruptLookupsAndReads(t *testing.T) {
	for _, anySignal := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "interrupt-on-any-signal"}[anySignal], func(t *testing.T) {
			store := newHoldingStore(memblob.New())
			data := randomBytes(1701, 256<<10)
			put(t, store, "held/data.bin", data)
			put(t, store, "held/other.bin", []byte("other"))
			opts := testOptions(t, store)
			opts.InterruptOnAnySignal = anySignal
			opts.DirectIO = true // every read reaches the daemon from the caller's thread
			_, dir := mountT(t, opts)

			var st unix.Stat_t
			early, err := signalWhileHeld(t, store, func() error {
				return unix.Stat(filepath.Join(dir, "held", "data.bin"), &st)
			})
			if anySignal {
				if !early || !errors.Is(err, syscall.EINTR) {
					t.Errorf("stat: returned early %v with %v; want EINTR while held", early, err)
				}
				if err := unix.Stat(filepath.Join(dir, "held", "data.bin"), &st); err != nil {
					t.Fatal(err)
				}
			} else if early || err != nil || st.Size != int64(len(data)) {
				t.Errorf("stat: returned early %v with %v, size %d; want size %d once the store answers", early, err, st.Size, len(data))
			}

			fd, err := unix.Open(filepath.Join(dir, "held", "data.bin"), unix.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			got := make([]byte, 64<<10)
			var n int
			early, err = signalWhileHeld(t, store, func() error {
				var err error
				n, err = unix.Pread(fd, got, 4096)
				return err
			})
			if anySignal {
				if !early || !errors.Is(err, syscall.EINTR) {
					t.Errorf("pread: returned early %v with %v; want EINTR while held", early, err)
				}
				return
			}
			if early || err != nil || n != len(got) || string(got) != string(data[4096:4096+len(got)]) {
				t.Errorf("pread: returned early %v with %v, %d bytes; want the blob's %d bytes once the store answers", early, err, n, len(got))
			}
		})
	}
}

// TestMountKilledCallerIsNotKeptWaiting: a process killed while its read
// waits on the store exits without waiting for the store. The kernel
// waits for the daemon's answer even for a dying process, so without the
// daemon noticing (fs/interrupt.go) it would stay unkillable until the
// store answered. A caught SIGTERM would not end it; an uncaught one does.
func TestMountKilledCallerIsNotKeptWaiting(t *testing.T) {
	store := newHoldingStore(memblob.New())
	data := randomBytes(1702, 256<<10)
	put(t, store, "held/data.bin", data)
	opts := testOptions(t, store)
	opts.DirectIO = true
	_, dir := mountT(t, opts)
	p := filepath.Join(dir, "held", "data.bin")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []os.Signal{os.Kill, syscall.SIGTERM} {
		release := store.hold()
		cat := exec.Command("cat", p)
		if err := cat.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cat.Wait() }()
		select {
		case <-store.waiting:
		case <-time.After(20 * time.Second):
			t.Fatal("cat's read never reached the store")
		}
		if err := cat.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
			if ws, ok := cat.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("%v: cat ended with %v, want killed by the signal", sig, cat.ProcessState)
			}
		case <-time.After(20 * time.Second):
			release()
			<-exited
			t.Fatalf("%v: cat stayed in its read until the store answered", sig)
		}
		release()
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != string(data) {
		t.Fatalf("read after the kills: %d bytes, %v; want the blob's %d", len(got), err, len(data))
	}
}

// TestPendingSignals reads the masks of a /proc/<tid>/status file.
func TestPendingSignals(t *testing.T) {
	status := "Name:\tcat\nSigQ:\t0/1\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000004000\nSigBlk:\t0000000000000000\n"
	m, err := pendingSignals(strings.NewReader(status))
	if err != nil || m != 0x4100 {
		t.Fatalf("pendingSignals = %#x, %v; want 0x4100", m, err)
	}
	if _, err := pendingSignals(strings.NewReader("Name:\tcat\n")); err == nil {
		t.Error("a status without SigPnd/ShdPnd: no error")
	}
	if _, err := pendingSignals(strings.NewReader("SigPnd:\tzz\n")); err == nil {
		t.Error("a bad mask: no error")
	}
}

// TestThreadDying: a thread with SIGKILL pending is dying, one without is
// not, and one that is gone counts as dying (nobody waits for it).
func TestThreadDying(t *testing.T) {
	old := procRoot
	procRoot = t.TempDir()
	defer func() { procRoot = old }()
	write := func(tid, pending string) {
		d := filepath.Join(procRoot, tid)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "status"), []byte("SigPnd:\t"+pending+"\nShdPnd:\t0000000000000000\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10", "0000000000000100") // SIGKILL
	write("11", "0000000000000002") // SIGINT, caught
	if dying, err := threadDying(10); !dying || err != nil {
		t.Errorf("SIGKILL pending: dying %v, %v", dying, err)
	}
	if dying, err := threadDying(11); dying || err != nil {
		t.Errorf("SIGINT pending: dying %v, %v", dying, err)
	}
	if dying, err := threadDying(12); !dying || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gone: dying %v, %v", dying, err)
	}
}
