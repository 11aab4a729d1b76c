package cache

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Block bytes are written, and read back, with O_DIRECT where the
// filesystem allows it.
//
// A buffered pwrite copies every fetched byte into the page cache and
// leaves the kernel to account and write back the dirty pages: on the
// benchmark machine (ext4 on virtio) 512 MiB cost 0.57 CPU-seconds that
// way and 0.06 with O_DIRECT (dd bs=1M), and on a cold scan that CPU is
// taken from the backend transfer and the FUSE replies sharing the node's
// cores. The cache has no use for those pages either: a block is served
// from the RAM tier or the flight that fetched it while it is hot, and the
// data file is read back (buffered, verified) only on later hits; Linux
// keeps buffered reads coherent with direct writes.
//
// Reads are the same trade: a warm scan read each block into the page
// cache and copied it out (half the daemon's CPU on a warm 512 MiB read);
// O_DIRECT reads it into the block's buffer directly. The page cache of the
// cache files is not needed: hot blocks live in the RAM tier, and the
// kernel keeps the mounted files' own pages (FOPEN_KEEP_CACHE).
//
// O_DIRECT needs the buffer address, the file offset and the length
// aligned to the device's logical block size; dioAlign (4 KiB) covers
// every device we run on. Block offsets are multiples of the block size
// (a power of two of at least 4 KiB); the buffers are the fetch's own
// large allocations, page aligned in practice, and checked anyway. The
// unaligned tail of a blob's last block, and any buffer that is not
// aligned, is written buffered. A filesystem that refuses O_DIRECT (tmpfs,
// some overlay setups: EINVAL) turns it off for the directory.
const dioAlign = 4096

// aligned reports whether p can be written with O_DIRECT at off.
func dioAligned(p []byte, off int64) bool {
	return len(p) >= dioAlign && off%dioAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%dioAlign == 0
}

// directFile returns of's data file opened for O_DIRECT I/O, opening
// it on first use; nil when direct I/O is off or refused.
func (d *disk) directFile(of *objFile) *os.File {
	if d.noDirectIO.Load() {
		return nil
	}
	of.dmu.Lock()
	defer of.dmu.Unlock()
	if of.direct == nil && !of.directFailed {
		// Reopen the inode of.data has open, not the path: the object may
		// have been removed and another created under the same name since.
		f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", of.data.Fd()), os.O_RDWR|unix.O_DIRECT, 0)
		if err != nil {
			of.directFailed = true
			if errors.Is(err, unix.EINVAL) {
				d.noDirect(err)
			}
			return nil
		}
		of.direct = f
	}
	return of.direct
}

// noDirect turns direct writes off for good, once, with a note in the log.
func (d *disk) noDirect(err error) {
	if !d.noDirectIO.Swap(true) {
		d.log.Info("cache: the cache filesystem refuses O_DIRECT; writing blocks through the page cache", "dir", d.dir, "err", err)
	}
}

// writeBlock writes one block's bytes at off: the aligned prefix with
// O_DIRECT when possible, the rest buffered. Both go through the writeAt
// seam.
func (d *disk) writeBlock(of *objFile, p []byte, off int64) (int, error) {
	if !dioAligned(p, off) {
		return d.writeAt(of.data, p, off)
	}
	f := d.directFile(of)
	if f == nil {
		return d.writeAt(of.data, p, off)
	}
	head := len(p) &^ (dioAlign - 1)
	n, err := d.writeAt(f, p[:head], off)
	if errors.Is(err, unix.EINVAL) && n == 0 {
		d.noDirect(err)
		return d.writeAt(of.data, p, off)
	}
	if err != nil || head == len(p) {
		return n, err
	}
	m, err := d.writeAt(of.data, p[head:], off+int64(head))
	return n + m, err
}

// readBlock reads len(p) bytes of of's data at off: with O_DIRECT when p,
// off and p's capacity (rounded up to dioAlign) allow it, buffered
// otherwise. It returns how many bytes of p it filled.
func (d *disk) readBlock(of *objFile, p []byte, off int64) (int, error) {
	full := (len(p) + dioAlign - 1) &^ (dioAlign - 1)
	if full <= cap(p) && dioAligned(p[:full], off) {
		if f := d.directFile(of); f != nil {
			m, err := f.ReadAt(p[:full], off)
			if m >= len(p) {
				return len(p), nil // the rest, if any, was past the end
			}
			if errors.Is(err, unix.EINVAL) && m == 0 {
				d.noDirect(err)
			} else {
				return m, err
			}
		}
	}
	return of.data.ReadAt(p, off)
}
