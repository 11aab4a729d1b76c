package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"os"
	"syscall"
	"testing"

	"github.com/blobfs/blobfs/blob"
)

func TestToErrno(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("op %q: %w", "x", err) }
	tests := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"not found", wrap(blob.ErrNotFound), syscall.ENOENT},
		{"exists", wrap(blob.ErrExists), syscall.EEXIST},
		{"permission", wrap(blob.ErrPermission), syscall.EACCES},
		{"stale", wrap(blob.ErrStale), syscall.ESTALE},
		{"throttled", wrap(blob.ErrThrottled), syscall.EIO},
		{"unavailable", wrap(blob.ErrUnavailable), syscall.EIO},
		{"checksum", wrap(blob.ErrChecksum), syscall.EIO},
		{"invalid", wrap(blob.ErrInvalid), syscall.EINVAL},
		{"too large", wrap(blob.ErrTooLarge), syscall.EFBIG},
		{"container missing", wrap(blob.ErrContainerNotFound), syscall.ENODEV},
		{"canceled", wrap(context.Canceled), syscall.EINTR},
		{"deadline", wrap(context.DeadlineExceeded), syscall.ETIMEDOUT},
		{"sentinel with cause", fmt.Errorf("put: %w: %w", blob.ErrThrottled, errors.New("503")), syscall.EIO},
		{"errno passes", wrap(syscall.ENOTEMPTY), syscall.ENOTEMPTY},
		{"staging disk full", &os.PathError{Op: "write", Path: "/tmp/x", Err: syscall.ENOSPC}, syscall.ENOSPC},
		{"never ENOSYS", wrap(syscall.ENOSYS), syscall.EIO},
		{"io/fs not exist", wrap(iofs.ErrNotExist), syscall.ENOENT},
		{"io/fs exist", wrap(iofs.ErrExist), syscall.EEXIST},
		{"io/fs permission", wrap(iofs.ErrPermission), syscall.EACCES},
		{"unknown", errors.New("something odd"), syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := toErrno(tt.err); got != tt.want {
				t.Errorf("toErrno(%v) = %v (%d), want %v (%d)", tt.err, got, got, tt.want, tt.want)
			}
		})
	}
}

// countingHandler counts log records per level.
type countingHandler struct {
	slog.Handler
	counts map[slog.Level]int
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.counts[r.Level]++
	return h.Handler.Handle(ctx, r)
}

func TestErrLogOncePerMessage(t *testing.T) {
	var buf bytes.Buffer
	h := &countingHandler{Handler: slog.NewTextHandler(&buf, nil), counts: map[slog.Level]int{}}
	l := errLog{log: slog.New(h)}
	odd := errors.New("something odd")
	for range 3 {
		if got := l.errno("read", "a", odd); got != syscall.EIO {
			t.Fatalf("errno = %v, want EIO", got)
		}
	}
	l.errno("read", "b", errors.New("something else"))
	l.errno("stat", "c", fmt.Errorf("x: %w", blob.ErrNotFound)) // expected: never logged
	if got := h.counts[slog.LevelError]; got != 2 {
		t.Errorf("logged %d errors, want 2 (one per distinct message):\n%s", got, &buf)
	}
	if got := h.counts[slog.LevelWarn]; got != 0 {
		t.Errorf("logged %d warnings for ENOENT, want 0", got)
	}
}
