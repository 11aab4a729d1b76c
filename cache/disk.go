package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"
)

// disk is the disk tier: one sparse data file and one sidecar per object in
// a directory shared by every process of the node (see the package comment
// for the protocol).
//
// Lock order (outer first):
//
//  1. the directory lock L_dir = lockMu + flock LOCK_EX on the ledger file;
//  2. objFile.wmu, around taking or dropping the object's flock LOCK_SH;
//  3. hmu (handle table), policy.mu, pendMu: leaves.
//
// A writer takes its object's LOCK_SH while holding L_dir and keeps it,
// without L_dir, until its records are final. That flock never waits: the
// only LOCK_EX takers (reconcile, Forget, removal of empty objects) hold
// L_dir and use LOCK_NB, skipping objects someone is writing. So the only
// lock any goroutine or process waits for is L_dir, and L_dir is never held
// across a backend fetch or a block's data write.
type disk struct {
	dir, objDir, tmpDir string
	bs                  int64
	budget              int64
	log                 *slog.Logger
	met                 *metrics
	st                  *counters
	pol                 *policy
	// writeAt stores block bytes in a data file; the seam where tests
	// inject ENOSPC and I/O errors.
	writeAt func(f *os.File, p []byte, off int64) (int, error)
	// noDirectIO is set at the directory's first O_DIRECT refusal
	// (directio.go).
	noDirectIO atomic.Bool
	// onEvict, if set, learns of every block eviction drops (the
	// prefetch ledger, prefetched.go); called under L_dir.
	onEvict func(blockKey)
	// testHookAfterBarrier, if set, runs in openBacking after its L_dir
	// barrier, before it reads the records.
	testHookAfterBarrier func()

	// lockMu is the in-process half of L_dir: flock locks belong to an open
	// file description, so goroutines sharing ledgerF do not exclude each
	// other through it.
	lockMu sync.Mutex
	// ledgerF is the flock target of L_dir and holds the usage ledger.
	ledgerF *os.File
	// liveF is held LOCK_SH while this disk is open; LOCK_EX|LOCK_NB on it
	// succeeds only for the sole user of the directory.
	liveF *os.File
	// used is the ledger's bytes in use: read at lock, written at unlock.
	// INVARIANT (while L_dir is held, across all processes): used equals
	// the cost of every PRESENT or RESERVED record plus every sidecar plus
	// the directories and fixed files, as reconcileLocked computes it.
	used     int64     // GUARDED_BY(L_dir)
	dirty    bool      // GUARDED_BY(L_dir)
	lastScan time.Time // GUARDED_BY(L_dir)
	usedSnap atomic.Int64
	// seq and ring mirror the ledger's journal header while L_dir is held;
	// cursor is the first journal entry this process has not applied to
	// its policy. INVARIANT: cursor <= seq unless the ledger was re-created
	// (then a rescan resets it).
	seq    uint64 // GUARDED_BY(L_dir)
	ring   uint32 // GUARDED_BY(L_dir)
	cursor uint64 // GUARDED_BY(L_dir)

	// pending are blocks this process found hot, to be journaled at the
	// next L_dir. Lock order: L_dir, then pendMu.
	pendMu  sync.Mutex
	pending []blockKey // GUARDED_BY(pendMu)

	// bufs recycles block buffers of disk hits that the RAM tier does not keep.
	bufs sync.Pool

	hmu sync.Mutex
	// handles caches open objects. GUARDED_BY(hmu)
	handles map[fileKey]*objFile

	// writing is the bytes this process has RESERVED and not yet
	// committed or rolled back (atomic: a writer that cannot retake L_dir
	// still gives them back).
	writing atomic.Int64

	// degraded is set after a failed store and cleared by the next
	// success, so a full disk logs one warning, not one per block.
	degraded atomic.Bool

	// verified is what this process has checked of each object: a
	// Backing is only handed out for an object verified whole (backing.go).
	verified verifiedSet
}

// Errors of the disk tier.
var (
	// ErrNoSpace: the disk tier could not make room (everything left is
	// pinned or being written). Readers never see it: they are served from
	// the backend. Fill returns it when a range could not be stored or pinned.
	ErrNoSpace = errors.New("cache: no room in the disk budget")
	// ErrBlockSizeMismatch: Dir was created with another block size and is
	// in use by another process.
	ErrBlockSizeMismatch = errors.New("cache: directory uses another block size")
	// errBusy: no room now because blocks being written hold it; the
	// block is served but not stored, without a warning (it is not a
	// disk problem and passes as soon as the writes commit).
	errBusy = fmt.Errorf("blocks being written hold the room: %w", ErrNoSpace)
	// errForeign: a sidecar with our file name describes another object
	// (a hash collision or a caller passing a wrong Size): bypass it.
	errForeign = errors.New("cache: sidecar belongs to another object")
)

const (
	maxHandles = 512
	// scanEvery rate-limits the rescans a process does when it needs room
	// and knows no victim of its own.
	scanEvery = time.Second
)

func openDisk(cfg Config, met *metrics, st *counters) (_ *disk, err error) {
	d := &disk{
		dir:     cfg.Dir,
		objDir:  filepath.Join(cfg.Dir, objDirName),
		tmpDir:  filepath.Join(cfg.Dir, tmpDirName),
		bs:      cfg.BlockSize,
		log:     cfg.Logger,
		met:     met,
		st:      st,
		writeAt: (*os.File).WriteAt,
		handles: map[fileKey]*objFile{},
	}
	for _, p := range []string{d.dir, d.objDir, d.tmpDir} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	if d.budget, err = cfg.diskBudget(d.dir); err != nil {
		return nil, err
	}
	d.pol = newPolicy(d.budget)
	if d.ledgerF, err = os.OpenFile(filepath.Join(d.dir, ledgerName), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if d.liveF, err = os.OpenFile(filepath.Join(d.dir, liveName), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		d.ledgerF.Close()
		return nil, fmt.Errorf("cache: %w", err)
	}
	defer func() {
		if err != nil {
			d.liveF.Close()
			d.ledgerF.Close()
		}
	}()
	if err := d.lockFile(); err != nil {
		return nil, err
	}
	defer d.unlock()
	// Under L_dir: reconcile (of any process) empties tmp/.
	if err := d.probePunch(); err != nil {
		return nil, err
	}
	// Decide "sole user" under L_dir, so no other Open can slip in between.
	sole := flock(d.liveF, unix.LOCK_EX|unix.LOCK_NB) == nil
	if err := flock(d.liveF, unix.LOCK_SH); err != nil {
		return nil, fmt.Errorf("cache: lock %s: %w", liveName, err)
	}
	l, ok := d.readLedger()
	if ok && l.blockSize != d.bs {
		if !sole {
			return nil, fmt.Errorf("cache: %s has block size %d, config wants %d, and another process uses it: %w",
				d.dir, l.blockSize, d.bs, ErrBlockSizeMismatch)
		}
		d.log.Warn("cache: block size changed, wiping the disk tier", "dir", d.dir, "old", l.blockSize, "new", d.bs)
		for _, p := range []string{d.objDir, d.tmpDir} {
			if err := os.RemoveAll(p); err != nil {
				return nil, fmt.Errorf("cache: wipe: %w", err)
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				return nil, fmt.Errorf("cache: wipe: %w", err)
			}
		}
		ok = false
	}
	if ok {
		d.seq, d.ring = l.seq, l.ring
	} else if err := d.initJournalLocked(); err != nil {
		return nil, err
	}
	if err := d.reconcileLocked(); err != nil {
		return nil, err
	}
	if err := d.makeRoomLocked(0); err != nil && !errors.Is(err, ErrNoSpace) {
		return nil, err
	}
	return d, nil
}

// probePunch fails early on a filesystem that cannot punch holes: eviction
// would not free space there.
func (d *disk) probePunch() error {
	f, err := os.CreateTemp(d.tmpDir, "probe-*")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 2*pageSize), 0); err != nil {
		return fmt.Errorf("cache: probe write: %w", err)
	}
	if err := punch(f, 0, pageSize); err != nil {
		return fmt.Errorf("cache: %s cannot punch holes (need ext4, xfs, btrfs or tmpfs): %w", d.dir, err)
	}
	return nil
}

func (d *disk) close() error {
	d.hmu.Lock()
	for k, of := range d.handles {
		delete(d.handles, k)
		of.stale = true
		if of.refs == 0 {
			of.close()
		}
	}
	d.hmu.Unlock()
	return errors.Join(d.liveF.Close(), d.ledgerF.Close())
}

// flock is syscall.Flock retried on EINTR (the Go runtime's preemption
// signals interrupt a blocking flock).
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func punch(f *os.File, off, n int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, roundUp(n, pageSize))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// lockFile takes L_dir without reading the ledger.
func (d *disk) lockFile() error {
	d.lockMu.Lock()
	if err := flock(d.ledgerF, unix.LOCK_EX); err != nil {
		d.lockMu.Unlock()
		return fmt.Errorf("cache: lock %s: %w", ledgerName, err)
	}
	return nil
}

// lock takes L_dir, loads the ledger and journals pending promotions; a
// torn or missing ledger is rebuilt by a scan.
func (d *disk) lock() error {
	if err := d.lockFile(); err != nil {
		return err
	}
	l, ok := d.readLedger()
	switch {
	case ok && l.blockSize == d.bs:
		d.used, d.seq, d.ring = l.used, l.seq, l.ring
	case ok:
		d.unlock()
		return fmt.Errorf("cache: %s was re-created with block size %d: %w", d.dir, l.blockSize, ErrBlockSizeMismatch)
	default:
		if err := d.initJournalLocked(); err != nil {
			d.unlock()
			return err
		}
		if err := d.reconcileLocked(); err != nil {
			d.unlock()
			return err
		}
	}
	d.pendMu.Lock()
	promos := d.pending
	d.pending = nil
	d.pendMu.Unlock()
	if len(promos) > 0 {
		ents := make([]jent, len(promos))
		for i, k := range promos {
			ents[i] = jent{k: k, kind: jPromote}
		}
		d.appendJournalLocked(ents)
	}
	return nil
}

func (d *disk) unlock() {
	if d.dirty {
		if _, err := d.ledgerF.WriteAt(ledger{blockSize: d.bs, used: d.used, seq: d.seq, ring: d.ring}.encode(), 0); err != nil {
			// The next lock finds the ledger torn or stale-but-valid; a
			// stale one is fixed by the next reconcile.
			d.log.Warn("cache: write ledger", "err", err)
		}
		d.dirty = false
	}
	d.usedSnap.Store(d.used)
	_ = flock(d.ledgerF, unix.LOCK_UN)
	d.lockMu.Unlock()
}

func (d *disk) readLedger() (ledger, bool) {
	buf := make([]byte, ledgerSize)
	n, _ := d.ledgerF.ReadAt(buf, 0)
	return decodeLedger(buf[:n])
}

// addUsed changes the ledger. Must hold L_dir.
func (d *disk) addUsed(delta int64) {
	d.used += delta
	d.dirty = true
}

// usedNow reads the ledger without the lock, for Stats; a torn read falls
// back to the last value seen.
func (d *disk) usedNow() int64 {
	if l, ok := d.readLedger(); ok {
		return l.used
	}
	return d.usedSnap.Load()
}

// ---- reads ----

// read returns block b of obj from disk, verified, or ok=false. With
// pooled, the buffer comes from d.bufs and the caller returns it with
// putBuf; otherwise it is the caller's to keep.
func (d *disk) read(obj Object, fk fileKey, b int64, pooled bool) ([]byte, bool) {
	for attempt := 0; attempt < 2; attempt++ {
		of, err := d.acquire(fk, &obj)
		if of == nil {
			if err != nil && !errors.Is(err, errForeign) {
				d.log.Warn("cache: open cached object", "err", err)
			}
			return nil, false
		}
		data, ok, retry := d.readFrom(of, b, pooled)
		d.release(of)
		if ok {
			return data, true
		}
		if pooled && data != nil {
			d.putBuf(data)
		}
		if !retry {
			return nil, false
		}
		d.invalidate(fk)
	}
	return nil, false
}

// readFrom reads and verifies block b; retry asks the caller to reopen the
// object (it was removed and may have been re-created).
func (d *disk) readFrom(of *objFile, b int64, pooled bool) (data []byte, ok, retry bool) {
	rec, err := of.readRecord(b)
	if err != nil || !rec.present() {
		return nil, false, of.unlinked()
	}
	n := blockLen(of.hdr.size, d.bs, b)
	var buf []byte
	if pooled {
		buf = d.getBuf(n)
	} else {
		// Capacity for an aligned O_DIRECT read of a short last block.
		buf = make([]byte, n, (n+dioAlign-1)&^(dioAlign-1))
	}
	m, err := d.readBlock(of, buf, b*d.bs)
	d.st.diskReadBytes.Add(uint64(m))
	if err == nil && int64(rec.length) == n && xxhash.Sum64(buf) == rec.sum {
		d.verified.mark(of.fk, b, of.nblocks)
		return buf, true, false
	}
	ok, gone := d.verifyLocked(of, b, buf)
	return buf, ok, gone
}

// verifyLocked settles a failed verification under L_dir, where nothing can
// change a PRESENT block: if the record changed the reader raced with an
// eviction or a re-admission (a miss, or a re-read); if it did not, the
// bytes on disk are corrupt and the block is dropped. gone reports that the
// object was removed meanwhile (the caller should reopen it).
func (d *disk) verifyLocked(of *objFile, b int64, buf []byte) (ok, gone bool) {
	if err := d.lock(); err != nil {
		d.log.Warn("cache: verify", "err", err)
		return false, false
	}
	defer d.unlock()
	if of.unlinked() {
		return false, true
	}
	rec, err := of.readRecord(b)
	if err != nil || !rec.present() {
		return false, false
	}
	if int64(rec.length) == int64(len(buf)) {
		m, err := of.data.ReadAt(buf, b*d.bs)
		d.st.diskReadBytes.Add(uint64(m))
		if err == nil && xxhash.Sum64(buf) == rec.sum {
			d.verified.mark(of.fk, b, of.nblocks)
			return true, false
		}
	}
	d.log.Warn("cache: corrupt block on disk, dropping it", "file", of.fk.base(), "block", b)
	d.st.checksumFailures.Add(1)
	d.met.checksumFailed()
	if err := d.dropLocked(of, b, rec); err != nil {
		d.log.Warn("cache: drop corrupt block", "err", err)
	}
	d.pol.remove(blockKey{of.fk, b})
	return false, false
}

func (d *disk) getBuf(n int64) []byte {
	if p, ok := d.bufs.Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, d.bs)
}

func (d *disk) putBuf(b []byte) {
	if int64(cap(b)) == d.bs {
		b = b[:0]
		d.bufs.Put(&b)
	}
}

// present reports whether block b is on disk, without reading it.
func (d *disk) present(obj Object, fk fileKey, b int64) bool {
	of, _ := d.acquire(fk, &obj)
	if of == nil {
		return false
	}
	defer d.release(of)
	rec, err := of.readRecord(b)
	return err == nil && rec.present()
}

// ---- writes ----

// admit stores blocks first..first+len(blocks)-1 of obj. Blocks already on
// disk or being written by someone else are skipped. It returns ErrNoSpace
// when room could not be made, or the write error; the blocks that made it
// are stored either way.
func (d *disk) admit(obj Object, fk fileKey, first int64, blocks [][]byte) error {
	sums := make([]uint64, len(blocks))
	for i, p := range blocks {
		sums[i] = xxhash.Sum64(p)
	}
	if err := d.lock(); err != nil {
		return err
	}
	of, err := d.ensureLocked(fk, obj)
	if err != nil {
		d.unlock()
		return err
	}
	defer d.release(of)
	if err := of.beginWrite(); err != nil {
		d.unlock()
		return err
	}
	// Reserve.
	var todo []int
	var need int64
	for i := range blocks {
		rec, err := of.readRecord(first + int64(i))
		if err != nil {
			d.unlock()
			of.endWrite()
			return err
		}
		if !rec.live() {
			todo = append(todo, i)
			need += blockCost(int64(len(blocks[i])))
		}
	}
	if len(todo) == 0 {
		d.unlock()
		of.endWrite()
		return nil
	}
	if err := d.makeRoomLocked(need); err != nil {
		d.unlock()
		of.endWrite()
		d.removeIfEmpty(of)
		return err
	}
	for _, i := range todo {
		r := record{state: mkState(kindReserve), length: uint32(len(blocks[i])), sum: sums[i]}
		if err := of.writeRecord(first+int64(i), r); err != nil {
			// Records already reserved are rolled back below as failures.
			todo = todo[:slices.Index(todo, i)]
			break
		}
		d.addUsed(blockCost(int64(len(blocks[i]))))
		d.writing.Add(blockCost(int64(len(blocks[i]))))
		of.addLive(1)
	}
	d.unlock()

	// Write the bytes; only this writer touches RESERVED blocks.
	failed := map[int]error{}
	for _, i := range todo {
		n, err := d.writeBlock(of, blocks[i], (first+int64(i))*d.bs)
		if err == nil && n != len(blocks[i]) {
			err = io.ErrShortWrite
		}
		if err != nil {
			failed[i] = err
		} else {
			d.st.diskWriteBytes.Add(uint64(n))
		}
	}

	// Commit: RESERVED -> PRESENT, or roll back.
	defer func() {
		for _, i := range todo {
			d.writing.Add(-blockCost(int64(len(blocks[i]))))
		}
	}()
	var firstErr error
	var admitted []jent
	if err := d.lock(); err != nil {
		// Without L_dir we cannot commit; the RESERVED records stay until a
		// reconcile sees no writer and reclaims them.
		of.endWrite()
		return err
	}
	for _, i := range todo {
		b := first + int64(i)
		if werr, bad := failed[i]; bad {
			if firstErr == nil {
				firstErr = werr
			}
			rec := record{state: mkState(kindReserve), length: uint32(len(blocks[i]))}
			if err := d.dropLocked(of, b, rec); err != nil {
				d.log.Warn("cache: roll back failed block", "err", err)
			}
			continue
		}
		r := record{state: mkState(kindPresent), length: uint32(len(blocks[i])), sum: sums[i]}
		if err := of.writeRecord(b, r); err != nil {
			if firstErr == nil {
				firstErr = err
			}
		} else {
			// Written from the bytes just hashed: verified, as far as
			// this process is concerned (backing.go).
			d.verified.mark(fk, b, of.nblocks)
		}
		admitted = append(admitted, jent{k: blockKey{fk, b}, kind: jAdmit})
		// Tracked before L_dir is released: a PRESENT block the policy
		// does not know is invisible to eviction, which would then take
		// protected blocks instead.
		d.pol.insert(blockKey{fk, b}, blockCost(int64(len(blocks[i]))))
	}
	d.appendJournalLocked(admitted)
	d.unlock()
	of.endWrite()
	// No empty sidecars left behind: by a full disk (failed writes), or
	// by an eviction that took the object's last block between our commit
	// and endWrite — it could not remove the object while we held
	// LOCK_SH, and nothing else would until a reconcile (a ledger two
	// pages above a rescan, seen when slower O_DIRECT writes widened that
	// window).
	d.removeIfEmpty(of)
	if firstErr != nil {
		return fmt.Errorf("cache: store block: %w", firstErr)
	}
	return nil
}

// ensureLocked returns a referenced handle of obj's files, creating them if
// needed. Must hold L_dir.
func (d *disk) ensureLocked(fk fileKey, obj Object) (*objFile, error) {
	for attempt := 0; attempt < 2; attempt++ {
		of, err := d.acquire(fk, &obj)
		if err != nil {
			return nil, err
		}
		if of == nil {
			break
		}
		if !of.unlinked() {
			return of, nil
		}
		d.release(of)
		d.invalidate(fk)
	}
	if err := d.createLocked(fk, obj); err != nil {
		return nil, err
	}
	of, err := d.acquire(fk, &obj)
	if err == nil && of == nil {
		err = fmt.Errorf("cache: created object vanished: %w", fs.ErrNotExist)
	}
	return of, err
}

// createLocked creates obj's data file and then its sidecar; the sidecar is
// written to tmp/ and linked into place, so it appears complete or not at
// all. A data file without a sidecar is debris that reconcile removes.
// Must hold L_dir.
func (d *disk) createLocked(fk fileKey, obj Object) error {
	sub := filepath.Join(d.objDir, fk.fanout())
	if err := os.Mkdir(sub, 0o700); err == nil {
		d.addUsed(pageSize)
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cache: %w", err)
	}
	hdr := encodeHeader(obj, d.bs)
	nb := nblocksOf(obj.Size, d.bs)
	cost := idxCost(int64(len(hdr)), nb)
	if err := d.makeRoomLocked(cost); err != nil {
		return err
	}
	df, err := os.OpenFile(d.dataPath(fk), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	err = df.Truncate(obj.Size)
	df.Close()
	if err != nil {
		os.Remove(d.dataPath(fk))
		return fmt.Errorf("cache: %w", err)
	}
	tf, err := os.CreateTemp(d.tmpDir, "idx-*")
	if err != nil {
		os.Remove(d.dataPath(fk))
		return fmt.Errorf("cache: %w", err)
	}
	defer os.Remove(tf.Name())
	content := make([]byte, cost)
	copy(content, hdr)
	_, err = tf.WriteAt(content, 0)
	if cerr := tf.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tf.Name(), d.idxPath(fk))
		if errors.Is(err, fs.ErrExist) {
			// A sidecar whose data file vanished (removed by hand): debris.
			os.Remove(d.idxPath(fk))
			err = os.Link(tf.Name(), d.idxPath(fk))
		}
	}
	if err != nil {
		os.Remove(d.dataPath(fk))
		return fmt.Errorf("cache: create sidecar: %w", err)
	}
	d.addUsed(cost)
	return nil
}

// dropLocked makes a live block absent and frees its space. Must hold L_dir.
func (d *disk) dropLocked(of *objFile, b int64, rec record) error {
	d.verified.unmark(of.fk, b)
	if err := of.writeRecord(b, record{}); err != nil {
		return err
	}
	d.addUsed(-blockCost(int64(rec.length)))
	of.addLive(-1)
	return punch(of.data, b*d.bs, int64(rec.length))
}

// makeRoomLocked evicts until need more bytes fit in the budget. Victims
// come from this process's policy; when it knows none, the directory is
// rescanned (at most every scanEvery) so blocks of other processes and of
// earlier runs become victims too. Must hold L_dir.
func (d *disk) makeRoomLocked(need int64) error {
	if need > d.budget {
		return fmt.Errorf("%d bytes exceed the budget of %d: %w", need, d.budget, ErrNoSpace)
	}
	if d.used+need > d.budget {
		if err := d.syncJournalLocked(); err != nil {
			return err
		}
	}
	scanned := false
	// Victims still being written (RESERVED) cannot be evicted; they stay
	// tracked (their writer's commit finds them known) and are put back
	// once room is made, so they are not picked again meanwhile.
	type victim struct {
		k    blockKey
		cost int64
	}
	var busy []victim
	defer func() {
		for _, v := range busy {
			d.pol.insert(v.k, v.cost)
		}
	}()
	for d.used+need > d.budget {
		if (len(busy) > 0 || d.writing.Load() > 0) && d.pol.probationEmpty() {
			// What probation holds is still being written: that room
			// comes back when the writes commit. Taking it from the
			// protected (hot) set instead would let a fast scan flush it.
			return fmt.Errorf("need %d bytes, %d of %d in use, the rest is being written: %w", need, d.used, d.budget, errBusy)
		}
		k, cost, ok := d.pol.victim()
		if !ok {
			if scanned || (!d.lastScan.IsZero() && time.Since(d.lastScan) < scanEvery) {
				return fmt.Errorf("need %d bytes, %d of %d in use, nothing evictable: %w", need, d.used, d.budget, ErrNoSpace)
			}
			scanned = true
			if err := d.reconcileLocked(); err != nil {
				return err
			}
			continue
		}
		if d.evictLocked(k, cost) {
			busy = append(busy, victim{k, cost})
		}
	}
	return nil
}

// evictLocked evicts block k if it is still present and not pinned; busy
// reports a block being written (RESERVED), which the caller must keep
// tracked. Must hold L_dir.
func (d *disk) evictLocked(k blockKey, cost int64) (busy bool) {
	of, err := d.acquire(k.fk, nil)
	if of == nil {
		return false
	}
	defer d.release(of)
	if err != nil || of.unlinked() {
		d.invalidate(k.fk)
		return false
	}
	if k.idx >= of.nblocks {
		return false
	}
	rec, err := of.readRecord(k.idx)
	if err != nil || !rec.present() {
		return err == nil && rec.reserved()
	}
	if rec.pinned() {
		d.pol.park(k, cost)
		return false
	}
	if of.leased() {
		// Handed to the kernel (backing.go): busy until the lease ends.
		return true
	}
	if err := d.dropLocked(of, k.idx, rec); err != nil {
		d.log.Warn("cache: evict", "err", err)
	}
	d.st.evictions.Add(1)
	d.met.evicted()
	if d.onEvict != nil {
		d.onEvict(k)
	}
	if of.liveCount() <= 0 {
		d.removeObjectLocked(of.fk, false)
	}
	return false
}

// removeIfEmpty removes an object that holds no blocks (after a failed
// admission created it).
func (d *disk) removeIfEmpty(of *objFile) {
	if of.liveCount() > 0 {
		return
	}
	if err := d.lock(); err != nil {
		return
	}
	defer d.unlock()
	d.removeObjectLocked(of.fk, false)
}

// removeObjectLocked unlinks fk's files if no process is writing it and,
// unless force, it holds no live blocks; it returns whether it did. With
// force, present blocks are released from the ledger. Must hold L_dir.
func (d *disk) removeObjectLocked(fk fileKey, force bool) bool {
	of, err := d.openFile(fk)
	if err != nil {
		return false
	}
	defer of.close()
	if flock(of.idx, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false // a writer holds LOCK_SH
	}
	defer flock(of.idx, unix.LOCK_UN)
	recs, err := of.readRecords()
	if err != nil {
		return false
	}
	var freed int64
	for _, r := range recs {
		if r.live() {
			if !force {
				setLive(of.idx, 1) // fix the advisory count
				return false
			}
			freed += blockCost(int64(r.length))
		}
	}
	if force && freed > 0 && !of.leased() {
		// Free the bytes now: another process may hold the files open
		// and would otherwise keep the space (its reads of the punched
		// blocks fail verification and find the object gone).
		_ = punch(of.data, 0, of.hdr.size)
	}
	if err := os.Remove(d.idxPath(fk)); err != nil {
		return false
	}
	os.Remove(d.dataPath(fk))
	d.verified.drop(fk)
	d.addUsed(-freed - idxCost(of.hdr.hdrSize, of.nblocks))
	d.invalidate(fk)
	return true
}

// ---- pins, forget, status ----

// setPinned sets or clears the pin flag of blocks [first, last] that are
// present; it returns how many of them were not present.
func (d *disk) setPinned(obj Object, fk fileKey, first, last int64, on bool) (missing int64, err error) {
	if err := d.lock(); err != nil {
		return 0, err
	}
	defer d.unlock()
	of, err := d.ensureExisting(fk, obj)
	if of == nil {
		return last - first + 1, err
	}
	defer d.release(of)
	for b := first; b <= last; b++ {
		rec, err := of.readRecord(b)
		if err != nil {
			return missing, err
		}
		if !rec.present() {
			missing++
			continue
		}
		k := blockKey{fk, b}
		cost := blockCost(int64(rec.length))
		if on {
			rec.state |= flagPinned
			d.pol.park(k, cost)
		} else {
			rec.state &^= flagPinned
			d.pol.unpark(k, cost)
		}
		if err := of.writeRecord(b, rec); err != nil {
			return missing, err
		}
	}
	return missing, nil
}

// ensureExisting is acquire plus a staleness check; nil if not on disk.
func (d *disk) ensureExisting(fk fileKey, obj Object) (*objFile, error) {
	of, err := d.acquire(fk, &obj)
	if of != nil && of.unlinked() {
		d.release(of)
		d.invalidate(fk)
		of, err = d.acquire(fk, &obj)
	}
	return of, err
}

// forget removes fk's blocks from disk (pinned ones included). If a writer
// is busy with the object, its present blocks are dropped and the files
// stay until the writer is done. It returns the object's block count.
func (d *disk) forget(fk fileKey) (int64, error) {
	if err := d.lock(); err != nil {
		return 0, err
	}
	defer d.unlock()
	of, err := d.openFile(fk)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		// Corrupt sidecar: nothing to account; remove the debris.
		os.Remove(d.idxPath(fk))
		os.Remove(d.dataPath(fk))
		d.invalidate(fk)
		return 0, nil
	}
	defer of.close()
	nb := of.nblocks
	for b := range nb {
		d.pol.remove(blockKey{fk, b})
	}
	if d.removeObjectLocked(fk, true) {
		return nb, nil
	}
	recs, err := of.readRecords()
	if err != nil {
		return nb, err
	}
	if of.leased() {
		// An open Backing reads these bytes; a writer is busy too. The
		// blocks go when both are done (eviction, or the next Forget).
		return nb, nil
	}
	for i, r := range recs {
		if r.present() {
			if err := d.dropLocked(of, int64(i), r); err != nil {
				return nb, err
			}
		}
	}
	return nb, nil
}

// staleSiblings lists the on-disk objects with obj's account, container
// and name but another ETag.
func (d *disk) staleSiblings(obj Object, fk fileKey) []fileKey {
	prefix := filepath.Join(d.objDir, fk.fanout(), fk.base()[:32]+"-")
	matches, _ := filepath.Glob(prefix + "*" + idxSuffix)
	var out []fileKey
	for _, m := range matches {
		other, ok := parseBase(strings.TrimSuffix(filepath.Base(m), idxSuffix))
		if !ok || other == fk {
			continue
		}
		of, err := d.openFile(other)
		if err != nil {
			continue
		}
		h := of.hdr
		of.close()
		if len(h.key) == 4 && h.key[0] == obj.Account && h.key[1] == obj.Container && h.key[2] == obj.Name {
			out = append(out, other)
		}
	}
	return out
}

func (d *disk) status(obj Object, fk fileKey) (ObjectStatus, error) {
	s := ObjectStatus{Size: obj.Size, BlockSize: d.bs, Blocks: nblocksOf(obj.Size, d.bs)}
	of, err := d.ensureExisting(fk, obj)
	if of == nil {
		if errors.Is(err, errForeign) {
			err = nil
		}
		return s, err
	}
	defer d.release(of)
	recs, err := of.readRecords()
	if err != nil {
		return s, err
	}
	for _, r := range recs {
		if r.present() {
			s.CachedBlocks++
			s.CachedBytes += int64(r.length)
			if r.pinned() {
				s.PinnedBlocks++
			}
		}
	}
	return s, nil
}
