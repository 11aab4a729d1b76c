package control

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		bad  string // "" means valid
	}{
		{"prefetch paths", Request{Op: OpPrefetch, Paths: []string{"a/b", "c*"}}, ""},
		{"prefetch checkpoint", Request{Op: OpPrefetch, Checkpoint: "ck", Rank: 3, WorldSize: 8}, ""},
		{"status of nothing", Request{Op: OpStatus}, ""},
		{"status of the root", Request{Op: OpStatus, Paths: []string{""}}, ""},
		{"unknown op", Request{Op: "format"}, "unknown op"},
		{"prefetch nothing", Request{Op: OpPrefetch}, "no paths"},
		{"absolute path", Request{Op: OpEvict, Paths: []string{"/etc/passwd"}}, "relative"},
		{"escaping path", Request{Op: OpPrefetch, Paths: []string{"../x"}}, "relative"},
		{"unclean path", Request{Op: OpPrefetch, Paths: []string{"a//b"}}, "relative"},
		{"evict checkpoint", Request{Op: OpEvict, Checkpoint: "ck"}, "not a checkpoint"},
		{"rank out of range", Request{Op: OpPrefetch, Checkpoint: "ck", Rank: 2, WorldSize: 2}, "rank 2"},
		{"rank without world", Request{Op: OpPrefetch, Checkpoint: "ck", Rank: 1}, "rank 1"},
		{"parallel", Request{Op: OpPrefetch, Paths: []string{"a"}, Parallel: 5000}, "parallel"},
		{"priority", Request{Op: OpPrefetch, Paths: []string{"a"}, Priority: "urgent"}, "priority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Validate()
			switch {
			case tc.bad == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.bad != "" && (err == nil || !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.bad)):
				t.Errorf("Validate = %v, want ErrBadRequest mentioning %q", err, tc.bad)
			}
		})
	}
}

// serve runs ServeConn on one end of a pipe and returns the other.
func serve(t *testing.T, h Handler) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		ServeConn(context.Background(), h, server, nil)
	}()
	return client
}

func TestRoundTrip(t *testing.T) {
	var got Request
	h := HandlerFunc(func(ctx context.Context, req Request, emit func(Event)) Event {
		got = req
		for i := range 3 {
			emit(Event{Type: EventProgress, Progress: &Progress{DoneFiles: i}})
		}
		emit(Event{Type: EventDone}) // a final event from emit is not forwarded
		return Event{Type: EventDone, Files: []FileStatus{{Path: "a", Size: 4, CachedBytes: 1}}}
	})
	req := Request{Op: OpStatus, Paths: []string{"a"}}
	var progress []int
	final, err := Do(context.Background(), serve(t, h), req, func(e Event) {
		progress = append(progress, e.Progress.DoneFiles)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Op != OpStatus || len(got.Paths) != 1 || got.Paths[0] != "a" {
		t.Errorf("handler got %+v", got)
	}
	if len(progress) != 3 || progress[2] != 2 {
		t.Errorf("progress events %v, want [0 1 2]", progress)
	}
	if final.Type != EventDone || len(final.Files) != 1 || final.Files[0].Percent() != 25 {
		t.Errorf("final %+v", final)
	}
}

func TestBadRequestAnswered(t *testing.T) {
	for _, line := range []string{"not json\n", `{"op":"nope"}` + "\n", `{"op":"prefetch"}` + "\n"} {
		c := serve(t, HandlerFunc(func(context.Context, Request, func(Event)) Event {
			t.Error("handler called for a bad request")
			return Event{Type: EventDone}
		}))
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		if !strings.Contains(string(b), `"code":"bad_request"`) {
			t.Errorf("%q answered %q, want a bad_request error", line, b)
		}
	}
}

// A client's cancel (Ctrl-C) reaches the handler's context, and the
// handler's final event comes back to the client.
func TestCancel(t *testing.T) {
	started := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req Request, emit func(Event)) Event {
		close(started)
		<-ctx.Done()
		return Event{Type: EventError, Code: CodeCanceled, Error: "stopped"}
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	final, err := Do(ctx, serve(t, h), Request{Op: OpPrefetch, Paths: []string{"a"}}, nil)
	if !errors.Is(err, context.Canceled) || final.Code != CodeCanceled {
		t.Errorf("Do = %+v, %v; want the canceled final event and context.Canceled", final, err)
	}
}

// A client that hangs up cancels its operation.
func TestHangUpCancels(t *testing.T) {
	canceled := make(chan struct{})
	started := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req Request, emit func(Event)) Event {
		close(started)
		<-ctx.Done()
		close(canceled)
		return Event{Type: EventError, Code: CodeCanceled}
	})
	c := serve(t, h)
	if _, err := io.WriteString(c, `{"op":"prefetch","paths":["a"]}`+"\n"); err != nil {
		t.Fatal(err)
	}
	<-started
	c.Close()
	select {
	case <-canceled:
	case <-time.After(time.Minute):
		t.Fatal("the handler was not canceled when the client hung up")
	}
}

func TestSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, SocketName("/mnt/data"))
	var calls atomic.Int32
	h := HandlerFunc(func(ctx context.Context, req Request, emit func(Event)) Event {
		calls.Add(1)
		return Event{Type: EventDone}
	})
	s, err := ListenSocket(context.Background(), path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, path: os.ModeSocket | 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, want)
		}
	}
	if _, err := ListenSocket(context.Background(), path, h, nil); err == nil {
		t.Error("a second server took over a live socket")
	}
	c, err := DialSocket(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if final, err := Do(context.Background(), c, Request{Op: OpStatus}, nil); err != nil || final.Type != EventDone || calls.Load() != 1 {
		t.Errorf("Do over the socket: %+v %v (calls %d)", final, err, calls.Load())
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	// A stale socket file (a killed mount) is replaced.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = ListenSocket(context.Background(), path, h, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s.Close()
	if len(SocketName("/a/very/long/"+strings.Repeat("x", 300))) > 40 {
		t.Error("socket names must stay short (unix socket paths are limited to 107 bytes)")
	}
}

// Do reports a server that goes away without an answer.
func TestNoAnswer(t *testing.T) {
	client, server := net.Pipe()
	go func() {
		b := make([]byte, 1)
		_, _ = server.Read(b)
		server.Close()
	}()
	if _, err := Do(context.Background(), client, Request{Op: OpStatus}, nil); !errors.Is(err, ErrNoAnswer) && !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Do = %v, want ErrNoAnswer", err)
	}
}
