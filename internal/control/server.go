package control

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// FileName is the control file at the root of every mount. fs.ControlName
// is the same name (package fs must not import this one's users, and this
// package has no FUSE in it).
const FileName = ".blobfs-control"

// Handler runs one request. It calls emit for progress (never
// concurrently with itself) and returns the final event (Type EventDone or
// EventError). It stops early, returning a CodeCanceled error event, when
// ctx ends.
type Handler interface {
	Handle(ctx context.Context, req Request, emit func(Event)) Event
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req Request, emit func(Event)) Event

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, req Request, emit func(Event)) Event {
	return f(ctx, req, emit)
}

// MaxRequestBytes bounds one request line, its newline included, and so
// the memory any user of a mount can make the daemon hold per open
// control file: a manifest of about 300,000 dataset paths fits; larger
// sets are named by directory or glob. Do refuses a longer request
// before sending it; ServeConn answers one with a CodeBadRequest error.
const MaxRequestBytes = 32 << 20

// ServeConn answers one request read from conn: it reads the request
// line, runs h and writes the events. A further line from the client, or
// the end of its input, cancels the operation (the control file's input
// ends when the client closes it). ctx ends the operation too.
func ServeConn(ctx context.Context, h Handler, conn io.ReadWriter, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	var wmu sync.Mutex
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	write := func(e Event) {
		b, err := json.Marshal(e)
		if err != nil {
			log.Error("control: encoding an event", "err", err)
			return
		}
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := conn.Write(append(b, '\n')); err != nil {
			cancel() // nobody is listening any more
		}
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	line, err := readLine(br)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			write(Event{Type: EventError, Code: CodeBadRequest, Error: err.Error()})
		}
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		write(Event{Type: EventError, Code: CodeBadRequest, Error: fmt.Sprintf("%v: request: %v", ErrBadRequest, err)})
		return
	}
	if err := req.Validate(); err != nil {
		write(Event{Type: EventError, Code: CodeBadRequest, Error: err.Error()})
		return
	}
	go func() {
		// Anything after the request, or its end, is a cancel.
		_, _ = br.ReadByte()
		cancel()
	}()
	final := h.Handle(ctx, req, func(e Event) {
		if !e.Final() {
			write(e)
		}
	})
	if !final.Final() {
		final = Event{Type: EventError, Code: CodeFailed, Error: "control: handler returned no final event"}
	}
	write(final)
}

// readLine reads one '\n'-terminated line of at most MaxRequestBytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRequestBytes {
			return nil, fmt.Errorf("%w: request longer than %d bytes: name directories or globs rather than every file", ErrBadRequest, MaxRequestBytes)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, fmt.Errorf("%w: request not terminated by a newline", ErrBadRequest)
		default:
			return nil, err
		}
	}
}

// DefaultSocketDir is where mounts put their control sockets when they
// may (root): one per mount, named after the mountpoint.
const DefaultSocketDir = "/run/blobfs"

// SocketName is the control socket's file name for a mountpoint: a hash,
// because a unix socket path is limited to 107 bytes.
func SocketName(mountpoint string) string {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		abs = mountpoint
	}
	sum := sha256.Sum256([]byte(abs))
	return "mount-" + hex.EncodeToString(sum[:8]) + ".sock"
}

// DefaultSocketPath is the control socket of the mount at mountpoint
// under DefaultSocketDir.
func DefaultSocketPath(mountpoint string) string {
	return filepath.Join(DefaultSocketDir, SocketName(mountpoint))
}

// SocketServer serves a Handler on a unix socket.
type SocketServer struct {
	path   string
	ln     *net.UnixListener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ListenSocket listens on path (mode 0600, in a directory created 0700 if
// missing) and serves h until Close. A stale socket left by a dead mount is
// replaced; a live one is an error.
func ListenSocket(ctx context.Context, path string, h Handler, log *slog.Logger) (*SocketServer, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: in use by another mount", path)
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Until this chmod the socket has the umask's mode; only the owner can
	// reach it in a 0700 directory, and a directory that is not ours is
	// checked here.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &SocketServer{path: path, ln: ln, cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				stop := context.AfterFunc(ctx, func() { c.Close() })
				defer stop()
				ServeConn(ctx, h, c, log)
			}()
		}
	}()
	return s, nil
}

// Path is the socket's path.
func (s *SocketServer) Path() string { return s.path }

// Close stops listening, cancels running operations, waits for them and
// removes the socket.
func (s *SocketServer) Close() error {
	err := s.ln.Close()
	s.cancel()
	s.wg.Wait()
	if _, serr := os.Lstat(s.path); serr == nil {
		_ = os.Remove(s.path)
	}
	return err
}
