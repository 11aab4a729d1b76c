package mounte2e

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blobfs/blobfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// extraArgs lets a run check the tests below against the old behaviour:
// BLOBFS_E2E_INTERRUPT_ARGS=--ignore-interrupts=false must fail them.
var extraArgs = strings.Fields(os.Getenv("BLOBFS_E2E_INTERRUPT_ARGS"))

// heldRequests matches the requests for blob "held/<name>": its HEAD, its
// reads, and listings of prefixes below "held/". It counts what it matched.
type heldRequests struct {
	name string
	seen atomic.Int64
}

func (h *heldRequests) match(r *http.Request) bool {
	ok := strings.HasSuffix(r.URL.Path, "/held/"+h.name) ||
		strings.HasPrefix(r.URL.Query().Get("prefix"), "held/")
	if ok {
		h.seen.Add(1)
	}
	return ok
}

// TestMountHarmlessSignalsDoNotFailRequests: a lookup and a read held at
// the backend while their calling thread is signalled again and again with
// a signal it handles (SIGURG, the Go runtime's preemption signal: what
// made RENAME_NOREPLACE fail with EINTR in CI) finish with the right
// answer once the backend answers, instead of failing with EINTR. Neither
// x/sys/unix nor glibc retries EINTR, so these are the raw system calls.
func TestMountHarmlessSignalsDoNotFailRequests(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	data := pseudoRandom(1601, 1<<20)
	s := newStore(t, c)
	putBlob(t, s, "held/data.bin", data, nil)
	putBlob(t, s, "held/other.bin", []byte("other"), nil)
	// Direct I/O: every read is a request from the reading thread itself
	// (page-cache readahead would be the kernel's, never interrupted).
	m, ctr := countedMount(t, c, append([]string{"--direct-io", "--auto-prefetch-shards", "0"}, extraArgs...)...)

	// signalWhileHeld holds h's requests, runs op on a thread of its own,
	// signals that thread while op waits on the backend, and returns op's
	// result once the requests are let go.
	signalWhileHeld := func(t *testing.T, h *heldRequests, op func() error) error {
		t.Helper()
		release := ctr.HoldRequests(h.match)
		defer release()
		tid, done := testenv.OnLockedThread(op)
		eventually(t, "the request held at the backend", func() error {
			if h.seen.Load() == 0 {
				return os.ErrNotExist
			}
			return nil
		})
		if returned, err := testenv.SignalThread(t, tid, unix.SIGURG, 20, 10*time.Millisecond, done); returned {
			t.Fatalf("returned while its request was held at the backend: %v", err)
		}
		release()
		select {
		case err := <-done:
			return err
		case <-time.After(cmdTimeout):
			t.Fatal("no answer after the backend was let go")
			return nil
		}
	}

	t.Run("stat", func(t *testing.T) {
		var st unix.Stat_t
		err := signalWhileHeld(t, &heldRequests{name: "data.bin"}, func() error {
			return unix.Stat(m.Path("held/data.bin"), &st)
		})
		if err != nil {
			t.Fatalf("stat: %v, want it to succeed", err)
		}
		if st.Size != int64(len(data)) {
			t.Errorf("stat: size %d, want %d", st.Size, len(data))
		}
	})

	t.Run("read", func(t *testing.T) {
		fd, err := unix.Open(m.Path("held/data.bin"), unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		got := make([]byte, 64<<10)
		var n int
		err = signalWhileHeld(t, &heldRequests{name: "data.bin"}, func() error {
			var err error
			n, err = unix.Pread(fd, got, 4096)
			return err
		})
		if err != nil {
			t.Fatalf("pread: %v, want it to succeed", err)
		}
		if !bytes.Equal(got[:n], data[4096:4096+n]) || n == 0 {
			t.Errorf("pread: %d bytes, not the blob's", n)
		}
	})
}

// TestMountKilledReaderIsNotKeptWaiting: a process killed while its read
// waits on a backend that does not answer exits at once. The kernel waits
// for the daemon's answer to a request it has sent even from a dying
// process, so without the daemon noticing, `kill -9` would leave it
// unkillable until the backend answered. The mount serves the file whole
// afterwards.
func TestMountKilledReaderIsNotKeptWaiting(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	data := pseudoRandom(1602, 1<<20)
	s := newStore(t, c)
	signals := map[string]os.Signal{"kill.bin": os.Kill, "term.bin": unix.SIGTERM}
	for name := range signals {
		putBlob(t, s, "held/"+name, data, nil)
	}
	m, ctr := countedMount(t, c, append([]string{"--direct-io", "--auto-prefetch-shards", "0"}, extraArgs...)...)

	for name, sig := range signals {
		p := m.Path("held/" + name)
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
		h := &heldRequests{name: name}
		release := ctr.HoldRequests(h.match)
		cat := exec.Command("cat", p)
		cat.Stdout = new(bytes.Buffer)
		if err := cat.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cat.Wait() }()
		eventually(t, "cat's read held at the backend", func() error {
			if h.seen.Load() == 0 {
				return os.ErrNotExist
			}
			return nil
		})
		if err := cat.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if ws, ok := cat.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				t.Errorf("%v: cat ended with %v, want killed by the signal", sig, err)
			}
		case <-time.After(30 * time.Second): // it has no reason to wait at all
			release()
			<-exited
			t.Fatalf("%v: cat stayed in its read until the backend answered", sig)
		}
		release()
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%v: read after the kill: %d bytes, not the blob's %d", sig, len(got), len(data))
		}
	}
}
