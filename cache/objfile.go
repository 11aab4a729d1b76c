package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// objFile is an open object: its sidecar and data file.
type objFile struct {
	fk      fileKey
	idx     *os.File
	data    *os.File
	hdr     header
	nblocks int64

	// direct is data opened with O_DIRECT for block writes (directio.go),
	// opened on first use.
	dmu          sync.Mutex
	direct       *os.File // GUARDED_BY(dmu)
	directFailed bool     // GUARDED_BY(dmu)

	refs  int  // GUARDED_BY(disk.hmu)
	stale bool // GUARDED_BY(disk.hmu): out of the table; closed at refs == 0

	wmu sync.Mutex
	// writers counts this process's writers of the object.
	// INVARIANT: the flock LOCK_SH on idx is held iff writers > 0.
	writers int // GUARDED_BY(wmu)
}

// openFile opens an object's files and parses its sidecar. It returns
// fs.ErrNotExist (wrapped) when the object is not on disk.
func (d *disk) openFile(fk fileKey) (*objFile, error) {
	idx, err := os.OpenFile(d.idxPath(fk), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	data, err := os.OpenFile(d.dataPath(fk), os.O_RDWR, 0)
	if err != nil {
		idx.Close()
		return nil, err
	}
	of := &objFile{fk: fk, idx: idx, data: data}
	buf := make([]byte, 2*pageSize)
	n, _ := idx.ReadAt(buf, 0)
	if n >= hdrFixed {
		// Names longer than the first read: read the whole key.
		if kl := int64(hdrFixed) + int64(binary.LittleEndian.Uint32(buf[24:])); kl > int64(len(buf)) && kl < 1<<20 {
			buf = make([]byte, kl)
			n, _ = idx.ReadAt(buf, 0)
		}
	}
	if of.hdr, err = decodeHeader(buf[:n]); err != nil {
		of.close()
		return nil, err
	}
	of.nblocks = nblocksOf(of.hdr.size, of.hdr.blockSize)
	return of, nil
}

func (of *objFile) close() {
	of.idx.Close()
	of.data.Close()
	of.dmu.Lock()
	if of.direct != nil {
		of.direct.Close()
	}
	of.dmu.Unlock()
}

// unlinked reports whether another process (or Forget) removed the object
// since it was opened.
func (of *objFile) unlinked() bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(of.idx.Fd()), &st); err != nil {
		return true
	}
	return st.Nlink == 0
}

// acquire returns a referenced handle of fk, or nil if the object is not on
// disk. obj, when non-nil, must match the sidecar (errForeign otherwise).
func (d *disk) acquire(fk fileKey, obj *Object) (*objFile, error) {
	d.hmu.Lock()
	of := d.handles[fk]
	if of != nil {
		of.refs++
	}
	d.hmu.Unlock()
	if of == nil {
		nf, err := d.openFile(fk)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		d.hmu.Lock()
		if of = d.handles[fk]; of != nil {
			of.refs++
			d.hmu.Unlock()
			nf.close()
		} else {
			of = nf
			of.refs = 1
			d.handles[fk] = of
			d.trimHandlesLocked()
			d.hmu.Unlock()
		}
	}
	if obj != nil && !of.hdr.matches(*obj, d.bs) {
		d.release(of)
		return nil, errForeign
	}
	return of, nil
}

func (d *disk) release(of *objFile) {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	of.refs--
	if of.refs == 0 && of.stale {
		of.close()
	}
}

// invalidate drops fk's handle from the table (the files were removed or
// replaced); holders keep using it until they release it.
func (d *disk) invalidate(fk fileKey) {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	if of := d.handles[fk]; of != nil {
		delete(d.handles, fk)
		of.stale = true
		if of.refs == 0 {
			of.close()
		}
	}
}

func (d *disk) trimHandlesLocked() {
	if len(d.handles) <= maxHandles {
		return
	}
	for k, of := range d.handles {
		if of.refs == 0 {
			delete(d.handles, k)
			of.close()
			if len(d.handles) <= maxHandles*3/4 {
				return
			}
		}
	}
}

// beginWrite registers a writer; the first one takes LOCK_SH on the sidecar
// so that no process treats the object's RESERVED records as crash debris.
func (of *objFile) beginWrite() error {
	of.wmu.Lock()
	defer of.wmu.Unlock()
	if of.writers == 0 {
		if err := flock(of.idx, unix.LOCK_SH); err != nil {
			return fmt.Errorf("cache: lock object: %w", err)
		}
	}
	of.writers++
	return nil
}

func (of *objFile) endWrite() {
	of.wmu.Lock()
	defer of.wmu.Unlock()
	of.writers--
	if of.writers == 0 {
		_ = flock(of.idx, unix.LOCK_UN)
	}
}

func (of *objFile) recOff(b int64) int64 { return of.hdr.hdrSize + b*recSize }

func (of *objFile) readRecord(b int64) (record, error) {
	var buf [recSize]byte
	if _, err := of.idx.ReadAt(buf[:], of.recOff(b)); err != nil {
		return record{}, fmt.Errorf("cache: read record: %w", err)
	}
	return decodeRecord(buf[:]), nil
}

func (of *objFile) readRecords() ([]record, error) {
	buf := make([]byte, of.nblocks*recSize)
	if _, err := of.idx.ReadAt(buf, of.hdr.hdrSize); err != nil {
		return nil, fmt.Errorf("cache: read records: %w", err)
	}
	recs := make([]record, of.nblocks)
	for i := range recs {
		recs[i] = decodeRecord(buf[i*recSize:])
	}
	return recs, nil
}

// writeRecord must be called under L_dir.
func (of *objFile) writeRecord(b int64, r record) error {
	if _, err := of.idx.WriteAt(r.encode(), of.recOff(b)); err != nil {
		return fmt.Errorf("cache: write record: %w", err)
	}
	return nil
}

// addLive adjusts the sidecar's live block count. Must hold L_dir.
func (of *objFile) addLive(delta int32) {
	setLive(of.idx, max(of.liveCount()+delta, 0))
}

// liveCount reads the sidecar's advisory live block count.
func (of *objFile) liveCount() int32 {
	var buf [4]byte
	_, _ = of.idx.ReadAt(buf[:], hdrLiveOff)
	return int32(binary.LittleEndian.Uint32(buf[:]))
}

func setLive(f *os.File, v int32) {
	_, _ = f.WriteAt(binary.LittleEndian.AppendUint32(nil, uint32(v)), hdrLiveOff)
}
