package control

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"
)

// The control file's ioctl transport.
//
// A read-only mount refuses open(O_RDWR) with EROFS before FUSE sees it,
// and write(2) needs a writable descriptor, but ioctl(2) on a descriptor
// opened O_RDONLY reaches the FUSE server on any mount. So a client that
// opens the control file read-only sends its request line by ioctls and
// reads the answer from the same descriptor; everything else (the request
// line, the events, a further line or the close cancelling) is the write
// transport's.
//
// The kernel passes a FUSE file only "restricted" ioctls: it takes the
// payload's size and direction from the command number (_IOC_SIZE,
// _IOC_DIR) and copies that many bytes from the argument pointer. The
// size field is 14 bits, so one ioctl carries at most IoctlMaxChunk
// bytes; a longer request is sent as several, in order, each appending
// to the stream as a write would. (As with EVIOCGNAME(len), the size is
// part of the command, so the kernel copies exactly the bytes sent.)
const (
	// IoctlType is the ioctl "magic" of the control file ('b').
	IoctlType = 'b'
	// IoctlNrWrite is the command's number within IoctlType.
	IoctlNrWrite = 0x01
	// IoctlMaxChunk is the most bytes one ioctl carries: the largest
	// _IOC_SIZE.
	IoctlMaxChunk = 1<<iocSizeBits - 1
)

// Linux's ioctl command layout (asm-generic: amd64, arm64, riscv64;
// what AKS nodes run): nr 8 bits, type 8, size 14, direction 2.
const (
	iocNrBits   = 8
	iocTypeBits = 8
	iocSizeBits = 14

	iocTypeShift = iocNrBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits

	iocWrite = 1 // _IOC_WRITE: from the caller to the driver
)

// IoctlWriteCmd is the command number that appends n request bytes
// (1..IoctlMaxChunk) to the control stream: _IOW('b', 0x01, n), with the
// argument pointing at the n bytes. IoctlWriteCmd(16383) is 0x7fff6201.
func IoctlWriteCmd(n int) uint32 {
	if n < 1 || n > IoctlMaxChunk {
		panic(fmt.Sprintf("control: ioctl chunk of %d bytes: want 1..%d", n, IoctlMaxChunk))
	}
	return iow(IoctlType, IoctlNrWrite, uint32(n))
}

// iow is Linux's _IOW(typ, nr, size).
func iow(typ, nr, size uint32) uint32 {
	return iocWrite<<iocDirShift | size<<iocSizeShift | typ<<iocTypeShift | nr
}

// ParseIoctlWriteCmd reports whether cmd is an IoctlWriteCmd, and the
// number of bytes it carries.
func ParseIoctlWriteCmd(cmd uint32) (n int, ok bool) {
	if cmd>>iocDirShift != iocWrite || cmd&(1<<iocSizeShift-1) != IoctlType<<iocTypeShift|IoctlNrWrite {
		return 0, false
	}
	n = int(cmd >> iocSizeShift & (1<<iocSizeBits - 1))
	return n, n > 0
}

// ioctlConn is a control file opened read-only: writes go by ioctl.
type ioctlConn struct{ f *os.File }

func (c ioctlConn) Read(p []byte) (int, error) { return c.f.Read(p) }
func (c ioctlConn) Close() error               { return c.f.Close() }

// Write sends p in chunks of at most IoctlMaxChunk bytes.
func (c ioctlConn) Write(p []byte) (int, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		chunk := p[done:min(len(p), done+IoctlMaxChunk)]
		var errno syscall.Errno
		if err := rc.Control(func(fd uintptr) { errno = ioctlWrite(fd, chunk) }); err != nil {
			return done, err
		}
		if errno != 0 {
			return done, &os.PathError{Op: "ioctl", Path: c.f.Name(), Err: errno}
		}
		done += len(chunk)
	}
	return done, nil
}

// ioctlWrite sends one chunk (not empty). EINTR is retried: the server
// never answers it, and the kernel only for a request it has not handed
// to the server, so nothing is sent twice.
func ioctlWrite(fd uintptr, chunk []byte) syscall.Errno {
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(IoctlWriteCmd(len(chunk))), uintptr(unsafe.Pointer(&chunk[0])))
		if errno != syscall.EINTR {
			return errno
		}
	}
}

// OpenFile opens the control file of the mount at mountpoint for one
// request. It opens the file read-only and sends the request by ioctl,
// which works on read-only mounts too (a pod's readOnly volumeMount).
// A mount running a blobfs from before that transport refuses a
// read-only open with EINVAL; the file is then opened read-write, which
// such a mount takes when it is writable. The file is opened by everyone
// who may use the mount, so it is the way in for a pod that only has the
// volume.
func OpenFile(mountpoint string) (io.ReadWriteCloser, error) {
	name := filepath.Join(mountpoint, FileName)
	f, err := os.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, syscall.EINVAL) {
		return OpenFileWrite(mountpoint)
	}
	if err != nil {
		return nil, fmt.Errorf("control file of the mount at %s: %w", mountpoint, err)
	}
	return ioctlConn{f}, nil
}

// OpenFileWrite opens the control file read-write, for the write
// transport: the request is written. A read-only mount refuses it with
// EROFS.
func OpenFileWrite(mountpoint string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(mountpoint, FileName), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("control file of the mount at %s: %w", mountpoint, err)
	}
	return f, nil
}
