package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"log/slog"
	"sync"
	"syscall"

	"github.com/blobfs/blobfs/blob"
)

// errClass says how an error is logged when it becomes an errno.
type errClass uint8

const (
	// classExpected: an answer, not a failure (ENOENT, EEXIST, ENOTEMPTY…).
	classExpected errClass = iota
	// classService: storage or the staging disk failed; worth a warning.
	classService
	// classUnknown: nothing we recognise; becomes EIO and an error log.
	classUnknown
)

// toErrno is the single mapping from Go errors to the errno the kernel
// hands back. The decisions, and why:
//
//   - blob.ErrNotFound → ENOENT, blob.ErrExists → EEXIST,
//     blob.ErrPermission → EACCES, blob.ErrArchived → EACCES (logged,
//     naming the tier), blob.ErrInvalid → EINVAL,
//     blob.ErrTooLarge → EFBIG: the obvious POSIX twins.
//   - blob.ErrStale → ESTALE: a read pinned to the ETag seen at open found a
//     newer version (or a conditional write lost a race). "Stale file
//     handle" says exactly that, and a reader never gets a torn mix of two
//     versions; reopening after AttrTTL sees the new one.
//   - blob.ErrThrottled, blob.ErrUnavailable, blob.ErrChecksum → EIO. The
//     adapter has already retried; EAGAIN would be worse than useless on a
//     regular file (Python's FileIO.read returns None for it, which
//     buffered readers take for end of file).
//   - blob.ErrContainerNotFound → ENODEV: the whole backing "device" is
//     gone, which is a configuration problem, not a missing file.
//   - context.Canceled → EINTR (the kernel interrupted the request);
//     context.DeadlineExceeded → ETIMEDOUT.
//   - a syscall.Errno anywhere in the chain (ours, or the staging disk's
//     ENOSPC) passes through, except ENOSYS, which would make the kernel
//     stop sending that operation for the life of the mount: it becomes EIO.
//   - anything else → EIO, logged once per distinct message; never ENOSYS.
func toErrno(err error) syscall.Errno {
	en, _ := classify(err)
	return en
}

func classify(err error) (syscall.Errno, errClass) {
	var en syscall.Errno
	switch {
	case err == nil:
		return 0, classExpected
	case errors.Is(err, context.Canceled):
		return syscall.EINTR, classExpected
	case errors.Is(err, context.DeadlineExceeded):
		return syscall.ETIMEDOUT, classService
	case errors.Is(err, blob.ErrContainerNotFound):
		return syscall.ENODEV, classService
	case errors.Is(err, blob.ErrNotFound):
		return syscall.ENOENT, classExpected
	case errors.Is(err, blob.ErrExists):
		return syscall.EEXIST, classExpected
	case errors.Is(err, blob.ErrArchived):
		// Logged with the message naming the tier and how to rehydrate.
		return syscall.EACCES, classService
	case errors.Is(err, blob.ErrPermission):
		return syscall.EACCES, classService
	case errors.Is(err, blob.ErrStale):
		return syscall.ESTALE, classService
	case errors.Is(err, blob.ErrThrottled), errors.Is(err, blob.ErrUnavailable), errors.Is(err, blob.ErrChecksum):
		return syscall.EIO, classService
	case errors.Is(err, blob.ErrTooLarge):
		return syscall.EFBIG, classService
	case errors.Is(err, blob.ErrInvalid):
		return syscall.EINVAL, classService
	case errors.As(err, &en):
		switch en {
		case 0, syscall.ENOSYS:
			return syscall.EIO, classUnknown
		case syscall.ENOENT, syscall.EEXIST, syscall.ENOTEMPTY, syscall.EISDIR, syscall.ENOTDIR,
			syscall.EROFS, syscall.ENAMETOOLONG, syscall.EINVAL, syscall.EINTR, syscall.EBADF:
			return en, classExpected
		}
		return en, classService
	case errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT, classExpected
	case errors.Is(err, iofs.ErrExist):
		return syscall.EEXIST, classExpected
	case errors.Is(err, iofs.ErrPermission):
		return syscall.EACCES, classService
	case errors.Is(err, iofs.ErrInvalid):
		return syscall.EINVAL, classService
	}
	return syscall.EIO, classUnknown
}

// maxLoggedErrors bounds the memory spent remembering logged messages; past
// it every further distinct message is still logged, just not remembered.
const maxLoggedErrors = 4096

// errLog logs each distinct error message once, so a failing backend does
// not flood the log with one line per FUSE request.
type errLog struct {
	log *slog.Logger

	mu   sync.Mutex
	seen map[string]struct{} // GUARDED_BY(mu)
}

// first reports whether msg has not been logged before, remembering it.
func (l *errLog) first(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[msg]; ok {
		return false
	}
	if l.seen == nil {
		l.seen = map[string]struct{}{}
	}
	if len(l.seen) < maxLoggedErrors {
		l.seen[msg] = struct{}{}
	}
	return true
}

// errno maps err for the kernel and logs it if it is a failure, once per
// distinct message.
func (l *errLog) errno(op, name string, err error) syscall.Errno {
	en, class := classify(err)
	switch class {
	case classUnknown:
		if l.first(err.Error()) {
			l.log.Error("blobfs: unexpected error, answering EIO", "op", op, "name", name, "err", err)
		}
	case classService:
		if l.first(err.Error()) {
			l.log.Warn("blobfs: operation failed", "op", op, "name", name, "errno", en.Error(), "err", err)
		}
	}
	return en
}
