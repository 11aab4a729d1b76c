// Package cache is blobfs's node-level block cache: the one way bytes enter
// the local cache. Read misses (Cache.ReadAt) and prefetch (Cache.Fill) go
// through the same path; the caller hands in the backend read (a FetchFunc,
// e.g. StoreFetch: blob.Store.ReadAt pinned to the ETag, with the caller's
// credential).
//
// # Model
//
// An object is one version of a blob: (account, container, name, ETag).
// It is cut into blocks of Config.BlockSize; a block's bytes never change,
// so the cache has no dirty state: a changed blob has a new ETag and simply
// misses (ForgetStale drops the old version's blocks). A block is served
// from RAM (ristretto, its own budget, TinyLFU admission), else from disk
// (verified against its checksum), else fetched. Misses of consecutive
// blocks are coalesced into one backend request of up to MaxFetchBytes;
// concurrent misses of a block share one fetch, which runs detached from
// every reader (context.WithoutCancel) and ends early only at Close.
//
// Random reads (Cache.ReadRandomAt, see ranges.go) do not drag whole
// blocks over the network: cached blocks still serve them, but what is not
// cached is fetched in RangeUnit (4 KiB) aligned ranges kept in RAM only,
// keyed like blocks by (blob, ETag), so a cold 4 KiB read costs one 4 KiB
// GET. Reader (the mount's read path) tells sequential streams (block reads
// plus adaptive readahead through Fill) from random reads.
//
// # Sequential scans
//
// A cold scan is a pipeline: Reader keeps up to window/8 MiB fills in
// flight per stream and refills as each one lands (not only when the
// reader calls); a fill registers its flights before the reader's own read,
// which then joins them; a run of blocks is fetched with one GET straight
// into each block's buffer (blob.VectorReader); fetched blocks stay in
// memory (fresh.go) until read even when the RAM tier's admission turns
// them away; block bytes go to disk with O_DIRECT (directio.go), off the
// page cache and the CPU the scan needs. A warm scan's readahead loads the
// blocks the disk holds as flights, one per block, so the kernel's
// concurrent READs are served from memory. Measured on a 512 MiB cold scan
// on Azurite (2 cores shared with the emulator): 4.3 → 2.0 daemon
// CPU-seconds per GiB, 199 → ~380 MB/s; see BENCHMARKS.md.
//
// # Disk layout
//
// Per object, under <Dir>/objects/<hh>/, named by hashes of the key:
//
//   - <name-hash>-<etag-hash>.data: a sparse file of exactly the blob's
//     size, block i at offset i*BlockSize. When every block is present it is
//     the blob, ready to hand to the kernel (FUSE passthrough).
//   - <name-hash>-<etag-hash>.idx: a header (full key, size, block size,
//     CRC32C) and one 16-byte record per block: state (absent, RESERVED,
//     PRESENT, pinned), length, xxhash64 of the bytes.
//
// <Dir>/ledger holds the bytes in use by all processes and is the flock
// target of the directory lock L_dir; every open Cache holds LOCK_SH on
// <Dir>/live.lock.
//
// # Protocol (several processes, one directory, one budget)
//
// Every record transition and every ledger change happens under L_dir
// (a process-local mutex plus flock LOCK_EX on the ledger). Storing blocks:
//
//  1. under L_dir: create the object if missing (data file, then the
//     sidecar written in tmp/ and linked into place), take the object's
//     flock LOCK_SH, evict until the blocks fit, mark their records RESERVED
//     and add their cost to the ledger;
//  2. without L_dir: pwrite the bytes (only the reserver writes a RESERVED
//     block);
//  3. under L_dir: mark them PRESENT with their checksum (or absent, punch
//     and refund on a write error such as ENOSPC), then drop LOCK_SH.
//
// Evicting (under L_dir): re-read the record; if PRESENT and not pinned,
// mark it absent, punch the hole, refund the ledger; an object left with no
// blocks is removed. Reading takes no lock: read the record, then the
// bytes, and compare checksums. A mismatch is settled under L_dir, where
// nothing can change a PRESENT block: a changed record means the reader
// raced with an eviction (a miss); an unchanged one means corruption, and
// the block is dropped and refetched. Corrupt bytes are never served.
//
// So, under L_dir, the ledger always equals the cost of all PRESENT and
// RESERVED records plus sidecars and directories, and it never exceeds the
// budget: reservations come before bytes.
//
// Each process orders the blocks it knows in its own segmented LRU (see
// policy). To share one budget fairly, the ledger file also holds a journal
// ring: every stored block (and every block a process found hot) is
// appended under L_dir, and a process applies the others' entries before
// choosing victims. So every process sees all blocks in admission order,
// and one daemon's scan does not flush another daemon's hot set. A process
// that fell more than a ring behind rescans the directory instead.
//
// # Crash safety
//
// Nothing is fsynced; the checksums make that safe. A process killed at any
// point leaves only states the next reconcile (at every Open, under L_dir)
// repairs:
//
//   - a temp sidecar in tmp/: removed (sidecars are only made under L_dir);
//   - a data file without a sidecar (killed during creation): removed;
//   - RESERVED records with no writer left (killed between 1 and 3): no
//     process holds the object's LOCK_SH, so LOCK_EX|LOCK_NB succeeds and
//     they become absent; their bytes are punched (SEEK_DATA finds them), and
//     the ledger is recomputed from the records;
//   - a record marked absent whose bytes were not yet punched: punched the
//     same way;
//   - a truncated data file or a corrupt header: the object is removed;
//   - a PRESENT record whose bytes did not reach the disk (power loss, torn
//     write): the checksum fails on read and the block is refetched.
//
// # FUSE passthrough
//
// A complete object's data file is the blob byte for byte, so it can be
// handed to the kernel (OpenBacking, backing.go; the volume's side is
// fs/passthrough.go). The kernel then reads the file behind the cache's
// back, which the cache allows only under three conditions:
//
//   - a lease (an OFD lock on the sidecar) keeps eviction, in every process
//     sharing the directory, from punching its blocks while it is open;
//     the kernel drops the lock with the last descriptor, so a crash
//     leaves none behind;
//   - every block has been verified by this process (read back with a
//     matching checksum, or written by it from bytes it hashed), because
//     passthrough reads are not checked;
//   - the object is keyed by ETag, so the file is exactly the version
//     opened.
//
// The warm path is then the kernel's: no FUSE round trip, the backing
// file's own page cache and readahead. Files not (yet) eligible are read
// through the daemon, which verifies each block and so makes them
// eligible at the next open.
//
// # Identity
//
// A hit is served to a reader only after its Credential has shown in this
// process that it may read the blob at this ETag: by a successful fetch of
// its own or by Object.Validate (a HEAD with its credential). Cached bytes
// fetched with one mount's identity never leak to another that lacks access.
package cache
