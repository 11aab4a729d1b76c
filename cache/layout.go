package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strings"
)

// On-disk layout of a cache directory (see the package comment for the
// protocol that keeps it consistent):
//
//	<Dir>/ledger          usage ledger, journal, and the directory lock (flock)
//	<Dir>/live.lock       every open Cache holds LOCK_SH on it
//	<Dir>/tmp/            sidecars being created (only under the directory lock)
//	<Dir>/objects/<hh>/<name-hash>-<etag-hash>.data   sparse copy of the blob
//	<Dir>/objects/<hh>/<name-hash>-<etag-hash>.idx    header + block records
//
// File names are hashes, never blob names: no path traversal, no length
// limits, and all ETags of one blob name share the <name-hash> prefix so
// ForgetStale finds them with one glob.
const (
	ledgerName  = "ledger"
	liveName    = "live.lock"
	tmpDirName  = "tmp"
	objDirName  = "objects"
	idxSuffix   = ".idx"
	dataSuffix  = ".data"
	pageSize    = 4096
	fileVersion = 1
)

// fileKey identifies one (account, container, name, ETag) on disk and in RAM.
// It is a hash, so equal keys are assumed equal objects; the sidecar header
// stores the full key and is compared on open, so a collision can only cost
// a cache bypass, never wrong bytes from disk.
type fileKey struct {
	name [16]byte // sha256(len-prefixed account, container, name)[:16]
	etag [8]byte  // sha256(etag)[:8]
}

// blockKey names one block of one object.
type blockKey struct {
	fk  fileKey
	idx int64
}

func nameHash(account, container, name string) [16]byte {
	h := sha256.New()
	for _, s := range []string{account, container, name} {
		var l [4]byte
		binary.LittleEndian.PutUint32(l[:], uint32(len(s)))
		h.Write(l[:])
		h.Write([]byte(s))
	}
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

func keyOf(obj Object) fileKey {
	var k fileKey
	k.name = nameHash(obj.Account, obj.Container, obj.Name)
	e := sha256.Sum256([]byte(obj.ETag))
	copy(k.etag[:], e[:])
	return k
}

// base is the file name stem: <32 hex>-<16 hex>.
func (k fileKey) base() string {
	return hex.EncodeToString(k.name[:]) + "-" + hex.EncodeToString(k.etag[:])
}

// fanout is the objects/ subdirectory holding k's files.
func (k fileKey) fanout() string { return hex.EncodeToString(k.name[:1]) }

// parseBase is the inverse of base; ok is false for names the cache did not write.
func parseBase(s string) (fileKey, bool) {
	var k fileKey
	nh, eh, found := strings.Cut(s, "-")
	if !found || len(nh) != 32 || len(eh) != 16 {
		return k, false
	}
	if _, err := hex.Decode(k.name[:], []byte(nh)); err != nil {
		return k, false
	}
	if _, err := hex.Decode(k.etag[:], []byte(eh)); err != nil {
		return k, false
	}
	return k, true
}

// ramKey is the RAM tier's key of a block: the binary file key and index.
func (b blockKey) ramKey() string {
	var buf [32]byte
	copy(buf[:16], b.fk.name[:])
	copy(buf[16:24], b.fk.etag[:])
	binary.LittleEndian.PutUint64(buf[24:], uint64(b.idx))
	return string(buf[:])
}

func (d *disk) idxPath(k fileKey) string {
	return filepath.Join(d.objDir, k.fanout(), k.base()+idxSuffix)
}

func (d *disk) dataPath(k fileKey) string {
	return filepath.Join(d.objDir, k.fanout(), k.base()+dataSuffix)
}

// Sidecar header, little endian:
//
//	[0:8]   magic "BFSCIDX1"
//	[8:12]  format version
//	[12:16] block size
//	[16:24] object size
//	[24:28] key length
//	[28:32] CRC32C of [0:28] and the key
//	[32:36] live block count (PRESENT+RESERVED; advisory, maintained under
//	        the directory lock and recomputed by reconcile)
//	[36:40] zero
//	[40:]   key: account, container, name, ETag, each u32-length-prefixed
//
// Records start at the page-aligned hdrSize, recSize bytes each:
//
//	[0:4] state  [4:8] length  [8:16] xxhash64 of the block's bytes
const (
	idxMagic    = "BFSCIDX1"
	hdrFixed    = 40
	hdrLiveOff  = 32
	recSize     = 16
	stateMagic  = 0xB10C00
	kindReserve = 1
	kindPresent = 2
	flagPinned  = 4
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// header is a decoded sidecar header.
type header struct {
	blockSize int64
	size      int64
	key       []string // account, container, name, etag
	hdrSize   int64    // offset of record 0
}

func encodeKey(obj Object) []byte {
	var b []byte
	for _, s := range []string{obj.Account, obj.Container, obj.Name, string(obj.ETag)} {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func hdrSizeFor(keyLen int) int64 { return roundUp(int64(hdrFixed+keyLen), pageSize) }

// encodeHeader returns the header page(s) for obj, padded to hdrSize.
func encodeHeader(obj Object, blockSize int64) []byte {
	key := encodeKey(obj)
	buf := make([]byte, hdrSizeFor(len(key)))
	copy(buf[0:8], idxMagic)
	binary.LittleEndian.PutUint32(buf[8:], fileVersion)
	binary.LittleEndian.PutUint32(buf[12:], uint32(blockSize))
	binary.LittleEndian.PutUint64(buf[16:], uint64(obj.Size))
	binary.LittleEndian.PutUint32(buf[24:], uint32(len(key)))
	copy(buf[hdrFixed:], key)
	crc := crc32.Update(crc32.Checksum(buf[0:28], crcTable), crcTable, key)
	binary.LittleEndian.PutUint32(buf[28:], crc)
	return buf
}

var errBadHeader = errors.New("cache: corrupt sidecar header")

// decodeHeader parses the first bytes of a sidecar (at least hdrFixed and
// the key must be present).
func decodeHeader(buf []byte) (header, error) {
	var h header
	if len(buf) < hdrFixed || string(buf[0:8]) != idxMagic {
		return h, errBadHeader
	}
	if v := binary.LittleEndian.Uint32(buf[8:]); v != fileVersion {
		return h, fmt.Errorf("sidecar version %d: %w", v, errBadHeader)
	}
	h.blockSize = int64(binary.LittleEndian.Uint32(buf[12:]))
	h.size = int64(binary.LittleEndian.Uint64(buf[16:]))
	kl := int(binary.LittleEndian.Uint32(buf[24:]))
	if kl > len(buf)-hdrFixed || h.size < 0 || h.blockSize < pageSize {
		return h, errBadHeader
	}
	key := buf[hdrFixed : hdrFixed+kl]
	crc := crc32.Update(crc32.Checksum(buf[0:28], crcTable), crcTable, key)
	if crc != binary.LittleEndian.Uint32(buf[28:]) {
		return h, errBadHeader
	}
	for len(key) > 0 {
		if len(key) < 4 {
			return h, errBadHeader
		}
		l := int(binary.LittleEndian.Uint32(key))
		if l > len(key)-4 {
			return h, errBadHeader
		}
		h.key = append(h.key, string(key[4:4+l]))
		key = key[4+l:]
	}
	if len(h.key) != 4 {
		return h, errBadHeader
	}
	h.hdrSize = hdrSizeFor(kl)
	return h, nil
}

// matches reports whether the header describes obj exactly.
func (h header) matches(obj Object, blockSize int64) bool {
	return h.blockSize == blockSize && h.size == obj.Size && len(h.key) == 4 &&
		h.key[0] == obj.Account && h.key[1] == obj.Container &&
		h.key[2] == obj.Name && h.key[3] == string(obj.ETag)
}

// record is one block's entry in the sidecar.
type record struct {
	state  uint32
	length uint32
	sum    uint64
}

func (r record) valid() bool    { return r.state>>8 == stateMagic }
func (r record) present() bool  { return r.valid() && r.state&0xff&kindPresent != 0 }
func (r record) reserved() bool { return r.valid() && r.state&0xff&kindReserve != 0 }
func (r record) pinned() bool   { return r.present() && r.state&0xff&flagPinned != 0 }

// live reports whether the record holds budget (present or reserved).
func (r record) live() bool { return r.present() || r.reserved() }

func mkState(kind uint32) uint32 { return stateMagic<<8 | kind }

func decodeRecord(b []byte) record {
	return record{
		state:  binary.LittleEndian.Uint32(b[0:]),
		length: binary.LittleEndian.Uint32(b[4:]),
		sum:    binary.LittleEndian.Uint64(b[8:]),
	}
}

func (r record) encode() []byte {
	b := make([]byte, recSize)
	binary.LittleEndian.PutUint32(b[0:], r.state)
	binary.LittleEndian.PutUint32(b[4:], r.length)
	binary.LittleEndian.PutUint64(b[8:], r.sum)
	return b
}

// Ledger file, little endian. Page 0:
//
//	[0:8]   magic
//	[8:12]  format version
//	[12:16] block size
//	[16:24] bytes in use
//	[24:32] journal sequence: entries ever appended
//	[32:36] journal ring size (entries), fixed when the file is created
//	[36:40] CRC32C of [0:36]
//
// From page 1 on, the journal: a ring of jentSize-byte entries, entry s at
// slot s % ring. An entry names a block that was stored (jAdmit) or found
// hot (jPromote) by some process, so that every process's eviction policy
// sees the others' blocks in recency order and their hot sets as hot.
const (
	ledgerMagic = "BFSLEDG2"
	ledgerSize  = 40
	jentSize    = 32
	jAdmit      = 1
	jPromote    = 2
	minRing     = 256
	maxRing     = 1 << 16
)

type ledger struct {
	blockSize int64
	used      int64
	seq       uint64
	ring      uint32
}

func (l ledger) encode() []byte {
	b := make([]byte, ledgerSize)
	copy(b, ledgerMagic)
	binary.LittleEndian.PutUint32(b[8:], fileVersion)
	binary.LittleEndian.PutUint32(b[12:], uint32(l.blockSize))
	binary.LittleEndian.PutUint64(b[16:], uint64(l.used))
	binary.LittleEndian.PutUint64(b[24:], l.seq)
	binary.LittleEndian.PutUint32(b[32:], l.ring)
	binary.LittleEndian.PutUint32(b[36:], crc32.Checksum(b[:36], crcTable))
	return b
}

func decodeLedger(b []byte) (ledger, bool) {
	if len(b) < ledgerSize || string(b[:8]) != ledgerMagic ||
		binary.LittleEndian.Uint32(b[8:]) != fileVersion ||
		binary.LittleEndian.Uint32(b[36:]) != crc32.Checksum(b[:36], crcTable) {
		return ledger{}, false
	}
	l := ledger{
		blockSize: int64(binary.LittleEndian.Uint32(b[12:])),
		used:      int64(binary.LittleEndian.Uint64(b[16:])),
		seq:       binary.LittleEndian.Uint64(b[24:]),
		ring:      binary.LittleEndian.Uint32(b[32:]),
	}
	return l, l.ring >= minRing && l.ring <= maxRing
}

// ringFor sizes the journal for a budget: about two entries per block the
// budget holds, so a process that has not looked for a while usually
// finds everything since in the ring.
func ringFor(budget, blockSize int64) uint32 {
	return uint32(min(max(2*budget/blockSize, minRing), maxRing))
}

// ledgerFileSize is the ledger file's size with a ring of n entries.
func ledgerFileSize(n uint32) int64 { return pageSize + roundUp(int64(n)*jentSize, pageSize) }

// jent is a journal entry.
type jent struct {
	k    blockKey
	kind byte
}

func (e jent) encode(b []byte) {
	copy(b[0:16], e.k.fk.name[:])
	copy(b[16:24], e.k.fk.etag[:])
	binary.LittleEndian.PutUint64(b[24:], uint64(e.k.idx)<<8|uint64(e.kind))
}

func decodeJent(b []byte) jent {
	var e jent
	copy(e.k.fk.name[:], b[0:16])
	copy(e.k.fk.etag[:], b[16:24])
	v := binary.LittleEndian.Uint64(b[24:])
	e.k.idx, e.kind = int64(v>>8), byte(v)
	return e
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// blockCost is what one stored block of length n charges to the budget.
func blockCost(n int64) int64 { return roundUp(n, pageSize) }

// idxCost is what a sidecar charges to the budget.
func idxCost(hdrSize, nblocks int64) int64 { return roundUp(hdrSize+nblocks*recSize, pageSize) }

// nblocksOf returns the number of blocks of an object of size bytes.
func nblocksOf(size, blockSize int64) int64 { return (size + blockSize - 1) / blockSize }

// blockLen returns the length of block idx of an object of size bytes.
func blockLen(size, blockSize, idx int64) int64 {
	return min(blockSize, size-idx*blockSize)
}
