package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The encoding is Linux's _IOW: checked against a command the kernel
// headers define (as x/sys/unix carries them) and against the numbers
// the documentation gives.
func TestIoctlWriteCmdEncoding(t *testing.T) {
	switch runtime.GOARCH {
	case "amd64", "arm64", "riscv64", "loong64":
		// FS_IOC_SETFLAGS is _IOW('f', 2, long).
		if got := iow('f', 2, 8); got != unix.FS_IOC_SETFLAGS {
			t.Errorf("iow('f', 2, 8) = %#x, want FS_IOC_SETFLAGS %#x", got, unix.FS_IOC_SETFLAGS)
		}
	default:
		t.Skipf("%s does not use the asm-generic ioctl layout", runtime.GOARCH)
	}
	for _, tc := range []struct {
		n    int
		want uint32
	}{
		{1, 0x40016201},
		{4096, 0x50006201},
		{IoctlMaxChunk, 0x7fff6201},
	} {
		if got := IoctlWriteCmd(tc.n); got != tc.want {
			t.Errorf("IoctlWriteCmd(%d) = %#x, want %#x", tc.n, got, tc.want)
		}
	}
	if IoctlMaxChunk != 16383 {
		t.Errorf("IoctlMaxChunk = %d, want 16383 (the largest _IOC_SIZE)", IoctlMaxChunk)
	}
}

func TestIoctlWriteCmdRoundTrip(t *testing.T) {
	for n := 1; n <= IoctlMaxChunk; n++ {
		if got, ok := ParseIoctlWriteCmd(IoctlWriteCmd(n)); !ok || got != n {
			t.Fatalf("ParseIoctlWriteCmd(IoctlWriteCmd(%d)) = %d, %v", n, got, ok)
		}
	}
	for name, cmd := range map[string]uint32{
		"size 0":                   iow(IoctlType, IoctlNrWrite, 0),
		"other type":               iow('c', IoctlNrWrite, 10),
		"other number":             iow(IoctlType, IoctlNrWrite+1, 10),
		"_IOR":                     2<<30 | 10<<16 | IoctlType<<8 | IoctlNrWrite,
		"_IOWR":                    3<<30 | 10<<16 | IoctlType<<8 | IoctlNrWrite,
		"_IO":                      IoctlType<<8 | IoctlNrWrite,
		"FS_IOC_SETFLAGS":          iow('f', 2, 8),
		"FIONREAD (no direction)":  0x541B,
		"FS_IOC_GETFLAGS (a read)": 0x80086601,
	} {
		if n, ok := ParseIoctlWriteCmd(cmd); ok {
			t.Errorf("%s (%#x): parsed as a request chunk of %d bytes", name, cmd, n)
		}
	}
}

func TestIoctlWriteCmdRefusesBadSizes(t *testing.T) {
	for _, n := range []int{0, -1, IoctlMaxChunk + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("IoctlWriteCmd(%d) did not panic", n)
				}
			}()
			IoctlWriteCmd(n)
		}()
	}
}

// A file that is not a control file (no FUSE server behind it) refuses
// the ioctl: OpenFile's writes report it rather than losing the request.
func TestIoctlConnOnAPlainFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(ioctlConn); !ok {
		t.Fatalf("OpenFile = %T, want the ioctl transport", c)
	}
	n, err := c.Write([]byte(`{"op":"status"}` + "\n"))
	if n != 0 || !errors.Is(err, syscall.ENOTTY) {
		t.Errorf("Write = %d, %v; want 0, ENOTTY", n, err)
	}
	if _, err := OpenFile(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenFile of a directory without a control file: %v, want ErrNotExist", err)
	}
}

func TestCheckRequestSize(t *testing.T) {
	if err := checkRequestSize(MaxRequestBytes); err != nil {
		t.Errorf("a request of exactly MaxRequestBytes: %v", err)
	}
	err := checkRequestSize(MaxRequestBytes + 1)
	if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), fmt.Sprintf("%d bytes", MaxRequestBytes+1)) || !strings.Contains(err.Error(), "globs") {
		t.Errorf("checkRequestSize(MaxRequestBytes+1) = %v, want ErrBadRequest naming the size and what to do", err)
	}
}
