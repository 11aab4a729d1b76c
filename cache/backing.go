package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Backing files: a fully cached object handed to the kernel whole.
//
// An object whose every block is on disk has a data file that is the blob
// byte for byte. FUSE passthrough (Linux 6.9+, root) lets the kernel read
// such a file directly: no FUSE round trip, no copy through the daemon, the
// backing file's own page cache and readahead — local-disk speed. Three
// things the cache otherwise guarantees must survive the kernel reading
// behind its back:
//
//   - No holes. Eviction punches holes; a block punched under an open
//     backing file would read as zeros. So a Backing holds a lease on its
//     object: an OFD read lock on one byte of the sidecar far past its end
//     (leaseOff). Eviction and forced removal test for it (F_OFD_GETLK)
//     under L_dir and leave a leased object's bytes alone, in every process
//     sharing the directory. The kernel drops OFD locks when the last
//     descriptor closes, so a crashed daemon leaves no lease behind (pins,
//     which persist in the sidecar, would).
//   - No unverified bytes. Passthrough reads are not checked against the
//     block checksums. A Backing is only handed out when every block has
//     been verified by this process: read from disk with a matching
//     checksum, or written by it from bytes it hashed. A restarted daemon
//     therefore serves a warm file through itself (verifying each block)
//     once, and hands it to the kernel from the next open on.
//   - One version. The object is keyed by ETag, so the file holds exactly
//     the bytes of the version the caller opened; a newer version is a
//     different object.
//
// Removal of a leased object (Forget, a stale ETag) unlinks its files
// without punching them: the open backing file keeps its bytes until the
// last reader closes it. The ledger is refunded at the unlink, so the disk
// may briefly hold more than the budget by the leased objects' size.

// leaseOff is the sidecar byte the lease locks: beyond any sidecar's end
// (a lock needs no data there), so it never meets another lock.
const leaseOff = 1 << 62

// ErrNoBacking: the object cannot be handed to the kernel now (not every
// block is on disk and verified in this process, or there is no disk
// tier). The caller serves it through the cache instead.
var ErrNoBacking = errors.New("cache: object not fully cached and verified")

// Backing is a fully cached object's data file, leased so that no process
// sharing the cache directory evicts its blocks while it is open.
type Backing struct {
	data  *os.File
	lease *os.File
	once  sync.Once
}

// File returns the data file, open read-only: the blob's bytes at offset 0.
func (b *Backing) File() *os.File { return b.data }

// Close ends the lease. The kernel may keep its own reference to the file
// (a registered FUSE backing file); closing here does not affect it, and
// from now on eviction may punch the blocks again.
func (b *Backing) Close() error {
	var err error
	b.once.Do(func() {
		err = errors.Join(b.data.Close(), b.lease.Close())
	})
	return err
}

// OpenBacking returns obj's data file for the kernel to read directly, or
// ErrNoBacking (wrapped) when not every block is on disk and verified by
// this process. It validates obj.Credential as a hit would (a cached
// object is only handed to an identity that may read it).
func (c *Cache) OpenBacking(ctx context.Context, obj Object) (*Backing, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if c.disk == nil || obj.Size <= 0 {
		return nil, fmt.Errorf("%s: %w", obj.Name, ErrNoBacking)
	}
	fk := keyOf(obj)
	d := c.disk
	// A cached file (the common open) passes the first check and never
	// looks at the fetches in flight.
	nb := nblocksOf(obj.Size, c.bs)
	whole := d.verifiedAll(fk, nb) || c.awaitInFlight(ctx, obj, fk) && d.verifiedAll(fk, nb)
	if !whole {
		return nil, fmt.Errorf("%s: %w", obj.Name, ErrNoBacking)
	}
	if obj.Validate == nil && !c.ids.has(fk, obj.Credential) {
		return nil, fmt.Errorf("%s: no way to validate the identity: %w", obj.Name, ErrNoBacking)
	}
	if err := c.validate(ctx, obj, fk, nil); err != nil {
		return nil, err
	}
	b, err := d.openBacking(obj, fk)
	if err != nil {
		return nil, err
	}
	c.st.backings.Add(1)
	c.met.backingOpened()
	return b, nil
}

// awaitWholeMax is the largest object an open waits for (awaitInFlight);
// the whole-shard readahead's limit (reader.go).
const awaitWholeMax = wholeFileWindow

// awaitWholeTimeout bounds that wait: a fetch that takes longer leaves the
// open to the daemon's read path, which joins it.
var awaitWholeTimeout = 2 * time.Second

// awaitInFlight waits, when every block of obj that this process has not
// verified on disk is being fetched right now, until those fetches are
// stored, so that the open that asked can be handed to the kernel. It
// reports whether it waited them out.
//
// A data loader opens a shard that the node's warm-up (blobfs prefetch),
// or another reader's readahead, is fetching. Opened without a backing
// file, every byte of it would pass through the daemon: a FUSE reply the
// kernel copies into the reader's page cache, the largest share of the
// daemon's CPU on a cold scan (BENCHMARKS.md, 2 cores). Waiting for the
// bytes it would wait for anyway and reading them from the cache file
// costs a reader of the whole shard nothing. Measured on the GPU feed
// with a warm-up racing epoch 1 (2 cores): passthrough opens went from
// 7-11 to 37-55 of 256 shards at full size and the daemon's CPU down by
// about a tenth; the stall did not move beyond the run-to-run spread.
//
// Only objects up to awaitWholeMax wait: one that large is read whole far
// more often than not (the whole-shard readahead's bet), while a reader
// of a larger file may want its header only. Blocks with no fetch running
// mean nobody is bringing the object in whole, and the open does not wait.
func (c *Cache) awaitInFlight(ctx context.Context, obj Object, fk fileKey) bool {
	if obj.Size > awaitWholeMax {
		return false
	}
	var wait []*flight
	c.fmu.Lock()
	for b := range nblocksOf(obj.Size, c.bs) {
		if fl := c.flights[blockKey{fk, b}]; fl != nil {
			wait = append(wait, fl)
			continue
		}
		if !c.disk.verified.has(fk, b) {
			c.fmu.Unlock()
			return false
		}
	}
	c.fmu.Unlock()
	if len(wait) == 0 {
		return false
	}
	t := time.NewTimer(awaitWholeTimeout)
	defer t.Stop()
	for _, fl := range wait {
		select {
		case <-fl.stored:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	c.st.backingWaits.Add(1)
	c.met.backingWaited()
	return true
}

// openBacking takes the lease, then checks that every block is PRESENT.
//
// L_dir is taken and released between the two, as a barrier, and is not
// held for the check. Evictions happen under L_dir, each in one section
// that looks for a lease, clears the record and punches the bytes. Once
// this open has held L_dir after taking its lease, every eviction that
// looked before the lease existed has finished and shows in the records,
// and every later one sees the lease and leaves the blocks alone. The
// check can then read the records without the lock. After the page cache
// was dropped (a new epoch, a restart) that read waits on the disk, behind
// the other readers' I/O, and under L_dir it held up every open,
// admission and eviction on the node: 16 parallel opens of cached shards
// waited 40-70 ms each for the lock in the GPU feed's second epoch.
func (d *disk) openBacking(obj Object, fk fileKey) (_ *Backing, err error) {
	of, err := d.acquire(fk, &obj)
	if of == nil {
		if err == nil {
			err = ErrNoBacking
		}
		return nil, fmt.Errorf("%s: %w", obj.Name, err)
	}
	defer d.release(of)
	lease, err := reopen(d.idxPath(fk), of.idx)
	if err != nil {
		return nil, fmt.Errorf("%s: lease: %w", obj.Name, err)
	}
	defer func() {
		if err != nil {
			lease.Close()
		}
	}()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: leaseOff, Len: 1}
	if err := unix.FcntlFlock(lease.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		return nil, fmt.Errorf("%s: lease: %w", obj.Name, err)
	}
	data, err := reopen(d.dataPath(fk), of.data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", obj.Name, err)
	}
	defer func() {
		if err != nil {
			data.Close()
		}
	}()
	if err := d.lock(); err != nil {
		return nil, err
	}
	d.unlock()
	if d.testHookAfterBarrier != nil {
		d.testHookAfterBarrier()
	}
	if of.unlinked() {
		return nil, fmt.Errorf("%s: removed meanwhile: %w", obj.Name, ErrNoBacking)
	}
	recs, err := of.readRecords()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", obj.Name, err)
	}
	for _, r := range recs {
		if !r.present() {
			return nil, fmt.Errorf("%s: a block was evicted: %w", obj.Name, ErrNoBacking)
		}
	}
	// Checked again after the barrier: a block this process evicted and
	// stored again since the first check is one it has not verified.
	if !d.verifiedAll(fk, of.nblocks) {
		return nil, fmt.Errorf("%s: %w", obj.Name, ErrNoBacking)
	}
	return &Backing{data: data, lease: lease}, nil
}

// leased reports whether some Backing (in any process) holds of's lease.
// Must hold L_dir for the answer to stay true.
func (of *objFile) leased() bool {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: leaseOff, Len: 1}
	if err := unix.FcntlFlock(of.idx.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return true // cannot tell: keep the bytes
	}
	return lk.Type != unix.F_UNLCK
}

// reopen opens path read-only, if it is still the file ref (not removed
// and re-created meanwhile).
func reopen(path string, ref *os.File) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var sa, sb unix.Stat_t
	if unix.Fstat(int(f.Fd()), &sa) != nil || unix.Fstat(int(ref.Fd()), &sb) != nil || sa.Dev != sb.Dev || sa.Ino != sb.Ino {
		f.Close()
		return nil, fmt.Errorf("replaced meanwhile: %w", ErrNoBacking)
	}
	return f, nil
}

// verifiedSet remembers, per object, the blocks this process has verified
// (read back with a matching checksum, or written from bytes it hashed)
// and not dropped since.
type verifiedSet struct {
	mu sync.Mutex
	m  map[fileKey][]uint64 // GUARDED_BY(mu): a bit per block
}

func (v *verifiedSet) mark(fk fileKey, b, nblocks int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[fileKey][]uint64{}
	}
	bits := v.m[fk]
	if want := int((nblocks + 63) / 64); len(bits) < want {
		bits = append(bits, make([]uint64, want-len(bits))...)
		v.m[fk] = bits
	}
	bits[b/64] |= 1 << (b % 64)
}

func (v *verifiedSet) unmark(fk fileKey, b int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if bits := v.m[fk]; int(b/64) < len(bits) {
		bits[b/64] &^= 1 << (b % 64)
	}
}

func (v *verifiedSet) drop(fk fileKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.m, fk)
}

func (v *verifiedSet) has(fk fileKey, b int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	bits := v.m[fk]
	return int(b/64) < len(bits) && bits[b/64]&(1<<(b%64)) != 0
}

func (v *verifiedSet) all(fk fileKey, nblocks int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	bits := v.m[fk]
	for b := range nblocks {
		if int(b/64) >= len(bits) || bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

func (d *disk) verifiedAll(fk fileKey, nblocks int64) bool { return d.verified.all(fk, nblocks) }
