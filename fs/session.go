package fs

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/blobfs/blobfs/blob"
)

// A writeSession is a file's content while it is being modified, kept as
// the block list it will be committed as. The file is cut into blocks of
// bs bytes (the last may be shorter); each block is, at any time, in one
// or both of two places:
//
//   - local: the staging file holds its current bytes (written here, or
//     fetched from the committed blob because a partial write needed
//     them);
//   - id: a block of blob idName, committed or staged, holds exactly its
//     current bytes, so a commit can name it without uploading anything.
//
// A block that is neither is still the committed blob's (base) bytes at
// the same offsets, reused by id when the base's block layout allowed it,
// fetched on demand otherwise. That is what makes an append to a 4 GiB
// checkpoint log upload one block, not 4 GiB, and what lets a sequential
// writer's full blocks be staged while it is still writing: Put Block
// uploads are uncommitted, invisible to readers until the commit at
// fsync/close makes the new block list the blob, atomically.
//
// Locking: the fileState's mu (exclusive) serializes writes, truncates
// and commits, and makes content reads consistent (shared). mu below
// guards only the block table against background stagers, which never
// take the fileState's lock; a stager that finds its block changed
// since it started (gen) throws its id away.
type writeSession struct {
	v   *Volume
	tmp *os.File // sparse: holds the local blocks at their offsets

	size int64 // GUARDED_BY(fileState.mu): current length
	bs   int64 // GUARDED_BY(fileState.mu): block size

	// base is the committed version non-local blocks come from.
	base struct {
		name string
		etag blob.ETag
		size int64
	} // GUARDED_BY(fileState.mu)

	// hash is the MD5 of [0, hashed) while every write so far continued
	// exactly where the previous one ended, from 0; nil once not. It
	// becomes the blob's Content-MD5 at commit (as a one-shot upload
	// would record it), without reading the content back.
	hash   hash.Hash // GUARDED_BY(fileState.mu)
	hashed int64     // GUARDED_BY(fileState.mu)

	mu       sync.Mutex
	cond     sync.Cond // on mu: a background stage ended
	blocks   []sessBlock
	idName   string // GUARDED_BY(mu): the blob whose block namespace ids belong to
	idLen    int    // GUARDED_BY(mu): decoded length of every id (the service requires one length per blob)
	idPrefix [16]byte
	idSeq    uint64 // GUARDED_BY(mu)
	gen      uint64 // GUARDED_BY(mu): last generation handed out
	inflight int    // GUARDED_BY(mu): background stages running
	// asyncErr is the first error of a background stage not yet reported
	// to the application; the next write returns it.
	asyncErr error // GUARDED_BY(mu)
}

type sessBlock struct {
	id    string // GUARDED_BY(writeSession.mu): see writeSession
	local bool   // GUARDED_BY(writeSession.mu)
	gen   uint64 // GUARDED_BY(writeSession.mu): changes with every modification of the block
	busy  bool   // GUARDED_BY(writeSession.mu): a background stage of it is running
}

// ErrFileTooLarge is returned (EFBIG) for a file that would need more than
// blob.MaxBlockCount blocks of the largest block size.
var ErrFileTooLarge = errors.New("file too large for a block blob")

// defaultIDLen is the decoded length of the block ids blobfs makes
// (blob.BlockID: 16-byte session + 8-byte index).
const defaultIDLen = 24

// newSession starts a write session over st's committed content. With
// keep >= 0 only the first keep bytes are kept (O_TRUNC, truncate), which
// needs no request at all. Otherwise an existing blob larger than one
// block has its committed block list read once: if its blocks are of one
// size (all but a shorter last one), that becomes the session's block
// size and unchanged blocks are committed again by id, never uploaded.
func (v *Volume) newSession(ctx context.Context, st *fileState, keep int64) (*writeSession, error) {
	f, err := os.CreateTemp(v.staging, "w-*")
	if err != nil {
		return nil, fmt.Errorf("staging file for %q: %w", st.name, err)
	}
	// Unlinked at once: a crash leaves nothing behind to clean up.
	os.Remove(f.Name())
	s := &writeSession{v: v, tmp: f, bs: v.opts.BlockSize, idName: st.name, idLen: defaultIDLen}
	s.cond.L = &s.mu
	if _, err := rand.Read(s.idPrefix[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("block id prefix: %w", err)
	}
	s.base.name, s.base.etag, s.base.size = st.name, st.pin, st.entry.Size
	size := st.entry.Size
	var committed []blob.Block
	if keep < 0 && size > s.bs {
		committed, err = v.store.Blocks(ctx, st.name)
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			f.Close()
			return nil, fmt.Errorf("block list of %q: %w", st.name, err)
		}
	}
	if bs, idLen, ok := reusableLayout(committed, size); ok {
		s.bs, s.idLen = bs, idLen
		s.blocks = make([]sessBlock, len(committed))
		for i, b := range committed {
			s.blocks[i].id = b.ID
		}
	} else {
		for (size+s.bs-1)/s.bs > blob.MaxBlockCount {
			s.bs *= 2
		}
		s.blocks = make([]sessBlock, (size+s.bs-1)/s.bs)
	}
	s.size = size
	if keep >= 0 && keep < size {
		if err := s.truncate(ctx, keep, size); err != nil {
			f.Close()
			return nil, err
		}
	}
	if s.size == 0 {
		s.hash = md5.New()
	}
	return s, nil
}

// reusableLayout reports whether a committed block list can be patched in
// place: blocks of one size bs (the last no larger) adding up to size,
// with ids of one decoded length of at least 8 bytes (so ids made here do
// not collide). Small blocks are fine: a file that outgrows
// blob.MaxBlockCount of them is re-blocked (reblock).
func reusableLayout(blocks []blob.Block, size int64) (bs int64, idLen int, ok bool) {
	if len(blocks) == 0 {
		return 0, 0, false
	}
	bs = blocks[0].Size
	var total int64
	for i, b := range blocks {
		raw, err := base64.StdEncoding.DecodeString(b.ID)
		if err != nil || len(raw) < 8 || len(raw) > 64 || (i > 0 && len(raw) != idLen) {
			return 0, 0, false
		}
		idLen = len(raw)
		if b.Size <= 0 || b.Size > bs || (b.Size != bs && i != len(blocks)-1) {
			return 0, 0, false
		}
		total += b.Size
	}
	if total != size || bs < 4096 || int64(len(blocks)) > blob.MaxBlockCount {
		return 0, 0, false
	}
	return bs, idLen, true
}

// close drops the local content. Background stages still running finish
// on their own (their results are ignored).
func (s *writeSession) close() {
	s.tmp.Close()
}

// extent is block i's byte range under the current size.
func (s *writeSession) extent(i int) (off, end int64) {
	off = int64(i) * s.bs
	return off, min(off+s.bs, s.size)
}

// newID returns a block id for idName no other session will use.
// Requires s.mu.
func (s *writeSession) newID() string {
	s.idSeq++
	if s.idLen == defaultIDLen {
		return blob.BlockID(s.idPrefix, s.idSeq)
	}
	raw := make([]byte, s.idLen)
	if s.idLen >= 16 {
		copy(raw, s.idPrefix[:])
		var seq [8]byte
		binary.BigEndian.PutUint64(seq[:], s.idSeq)
		copy(raw[min(16, s.idLen-8):], seq[:])
	} else {
		_, _ = rand.Read(raw) // 8..15 random bytes: collisions are not a practical concern
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// fetch makes block i local by copying its committed bytes into the
// staging file. Requires fileState.mu exclusively.
func (s *writeSession) fetch(ctx context.Context, i int) error {
	s.mu.Lock()
	local := s.blocks[i].local
	s.mu.Unlock()
	if local {
		return nil
	}
	off, end := s.extent(i)
	end = min(end, s.base.size)
	if end > off {
		buf := make([]byte, end-off)
		n, err := s.v.readBlob(ctx, s.base.name, s.base.etag, s.base.size, buf, off)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
			return fmt.Errorf("read block %d of %q: %w", i, s.base.name, err)
		}
		if _, err := s.tmp.WriteAt(buf, off); err != nil {
			return fmt.Errorf("staging: %w", err)
		}
	}
	s.mu.Lock()
	s.blocks[i].local = true
	s.mu.Unlock()
	return nil
}

// materialize makes every block local, so the content no longer depends on
// the committed blob (before it is deleted: unlink or rename of an open
// file). Requires fileState.mu exclusively.
func (s *writeSession) materialize(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.v.opts.Concurrency)
	for i := range s.blocks {
		g.Go(func() error { return s.fetch(gctx, i) })
	}
	return g.Wait()
}

// modified records that [off, end) changed: its blocks are local now and
// no id holds them any more. Requires s.mu.
func (s *writeSession) modifiedLocked(off, end int64) {
	for i := int(off / s.bs); i < len(s.blocks) && int64(i)*s.bs < end; i++ {
		b := &s.blocks[i]
		s.gen++
		b.gen, b.id, b.local = s.gen, "", true
	}
}

// write stores p at off, fetching first the committed bytes of blocks the
// write covers only partly, then starts background stages of the blocks
// the write completed. Requires fileState.mu exclusively.
func (s *writeSession) write(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	if err := s.asyncErr; err != nil {
		s.asyncErr = nil
		s.mu.Unlock()
		return 0, fmt.Errorf("an earlier block upload failed: %w", err)
	}
	s.mu.Unlock()
	end := off + int64(len(p))
	if err := s.grow(ctx, end); err != nil {
		return 0, err
	}
	// Blocks only partly overwritten need their old bytes first.
	for _, i := range []int{int(off / s.bs), int((end - 1) / s.bs)} {
		bOff, bEnd := s.extent(i)
		if off <= bOff && end >= bEnd {
			continue
		}
		if err := s.fetch(ctx, i); err != nil {
			return 0, err
		}
	}
	n, err := s.tmp.WriteAt(p, off)
	if n > 0 {
		if s.hash != nil && off == s.hashed {
			s.hash.Write(p[:n])
			s.hashed += int64(n)
		} else if s.hash != nil {
			s.hash = nil
		}
		s.mu.Lock()
		s.modifiedLocked(off, off+int64(n))
		s.mu.Unlock()
	}
	if err != nil {
		return n, fmt.Errorf("staging: %w", err)
	}
	// A sequential writer that reached a block's end will not come back
	// to it: upload it now, while the application writes the next one.
	s.stageCompleted(name, off, end)
	return n, nil
}

// grow extends the block table so that it covers end, re-blocking with a
// larger block size if the file would otherwise need more blocks than a
// blob may have. Bytes between the old size and off are zeros (the
// staging file is sparse). Requires fileState.mu exclusively.
func (s *writeSession) grow(ctx context.Context, end int64) error {
	if end <= s.size {
		return nil
	}
	// The old last block, if partial, gains bytes: it must be local so the
	// zeros/new bytes land next to its old ones.
	if s.size%s.bs != 0 {
		if err := s.fetch(ctx, len(s.blocks)-1); err != nil {
			return err
		}
	}
	if (end+s.bs-1)/s.bs > blob.MaxBlockCount {
		if err := s.reblock(ctx, end); err != nil {
			return err
		}
	}
	oldSize := s.size
	s.size = end
	s.mu.Lock()
	defer s.mu.Unlock()
	for int64(len(s.blocks))*s.bs < end {
		s.blocks = append(s.blocks, sessBlock{})
	}
	s.modifiedLocked(oldSize, end)
	return nil
}

// reblock doubles the block size until end fits in blob.MaxBlockCount
// blocks; every block becomes local (ids of the old size mean nothing
// under the new one). EFBIG past the service's largest block.
func (s *writeSession) reblock(ctx context.Context, end int64) error {
	bs := s.bs
	for (end+bs-1)/bs > blob.MaxBlockCount {
		bs *= 2
	}
	if bs > blob.MaxBlockSize {
		return fmt.Errorf("%d bytes: %w: %w", end, ErrFileTooLarge, syscall.EFBIG)
	}
	if err := s.waitIdle(ctx); err != nil {
		return err
	}
	if err := s.materialize(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bs = bs
	s.blocks = make([]sessBlock, (s.size+bs-1)/bs)
	s.modifiedLocked(0, s.size)
	return nil
}

// truncate sets the length to size (oldSize is the length the blocks
// describe). Requires fileState.mu exclusively.
func (s *writeSession) truncate(ctx context.Context, size, oldSize int64) error {
	if size > oldSize {
		if err := s.grow(ctx, size); err != nil {
			return err
		}
		return s.tmp.Truncate(size)
	}
	keep := int((size + s.bs - 1) / s.bs)
	if size%s.bs != 0 {
		// The new last block is cut: keep its surviving bytes locally.
		s.size = oldSize
		if err := s.fetch(ctx, keep-1); err != nil {
			return err
		}
	}
	if err := s.tmp.Truncate(size); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	s.size = size
	if s.hash != nil && s.hashed > size {
		s.hash = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocks = s.blocks[:keep]
	if size%s.bs != 0 {
		s.modifiedLocked(int64(keep-1)*s.bs, size)
	}
	return nil
}

// readAt reads the session's content: local blocks from the staging file,
// the others from the committed version. Requires fileState.mu (shared is
// enough).
func (s *writeSession) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), s.size-off)]
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		i := int(pos / s.bs)
		_, bEnd := s.extent(i)
		chunk := p[done:min(len(p), done+int(bEnd-pos))]
		s.mu.Lock()
		local := s.blocks[i].local
		s.mu.Unlock()
		var n int
		var err error
		if local {
			n, err = s.tmp.ReadAt(chunk, pos)
		} else {
			n, err = s.v.readBlob(ctx, s.base.name, s.base.etag, s.base.size, chunk, pos)
		}
		done += n
		if errors.Is(err, io.EOF) && n == len(chunk) {
			err = nil
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// stageCompleted starts a background stage of each block inside [off,
// end) whose end the write reached and that is not the file's last
// (possibly growing) block. At most Concurrency run per file; beyond that
// the write waits, which bounds memory to Concurrency blocks per file.
// Requires fileState.mu exclusively.
func (s *writeSession) stageCompleted(name string, off, end int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idName != name {
		return // renamed while dirty: the commit restages under the new name
	}
	for i := int(off / s.bs); i < len(s.blocks); i++ {
		bOff, bEnd := int64(i)*s.bs, int64(i+1)*s.bs
		if bOff >= end || bEnd > end || bEnd > s.size {
			break
		}
		b := &s.blocks[i]
		if b.id != "" || b.busy || !b.local {
			continue
		}
		for s.inflight >= s.v.opts.Concurrency {
			s.cond.Wait()
		}
		if i >= len(s.blocks) || s.blocks[i].id != "" || s.blocks[i].busy {
			continue
		}
		s.blocks[i].busy = true
		s.inflight++
		go s.stageInBackground(name, i, s.blocks[i].gen, bOff, s.bs)
	}
}

// stageInBackground uploads block i as it is in the staging file now.
func (s *writeSession) stageInBackground(name string, i int, gen uint64, off, n int64) {
	s.mu.Lock()
	id := s.newID()
	s.mu.Unlock()
	buf := make([]byte, n)
	// A short read means the file was truncated meanwhile: the block is
	// gone or changed (its gen tells below), so there is nothing to do.
	_, err := s.tmp.ReadAt(buf, off)
	readOK := err == nil
	if readOK {
		ctx, cancel := s.v.uploadContext(s.v.bg)
		err = s.v.store.StageBlock(ctx, name, id, buf)
		cancel()
		if err == nil {
			s.v.stats.stagedInBackground.Add(1)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	s.cond.Broadcast()
	if i >= len(s.blocks) {
		return // truncated away meanwhile
	}
	// Only one stage per block runs at a time (stageCompleted skips busy
	// blocks), so busy is ours to clear; the id counts only if the block
	// did not change while it was uploading.
	b := &s.blocks[i]
	b.busy = false
	if b.gen != gen || s.idName != name {
		return // changed while uploading: the commit stages it again
	}
	if err == nil {
		b.id = id
	} else if readOK && s.v.bg.Err() == nil && s.asyncErr == nil {
		s.asyncErr = err
	}
}

// waitIdle waits for the background stages to end.
func (s *writeSession) waitIdle(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.inflight > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.cond.Wait()
	}
	return nil
}

// commit makes the session's content blob name, atomically and under
// cond: one Put when it fits one block, else the block list (staging
// first every block no id holds yet, in parallel). On success the blocks
// keep their ids, so the next commit of a growing log uploads only what
// changed. Requires fileState.mu exclusively.
func (s *writeSession) commit(ctx context.Context, name string, cond blob.Conditions) (blob.Attrs, error) {
	if err := s.waitIdle(ctx); err != nil {
		return blob.Attrs{}, err
	}
	s.mu.Lock()
	s.asyncErr = nil // its block is restaged below
	if s.idName != name {
		// Ids name blocks of another blob (renamed while dirty).
		for i := range s.blocks {
			s.blocks[i].id = ""
		}
		s.idName = name
	}
	s.mu.Unlock()

	var md5sum []byte
	if s.hash != nil && s.hashed == s.size {
		md5sum = s.hash.Sum(nil)
	}
	if s.size <= s.bs {
		if len(s.blocks) == 1 {
			if err := s.fetch(ctx, 0); err != nil {
				return blob.Attrs{}, err
			}
		}
		buf := make([]byte, s.size)
		if _, err := s.tmp.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
			return blob.Attrs{}, fmt.Errorf("read staging: %w", err)
		}
		a, err := s.v.store.Put(ctx, name, buf, blob.WriteOptions{Conditions: cond})
		if err != nil {
			return blob.Attrs{}, err
		}
		s.mu.Lock()
		for i := range s.blocks {
			s.blocks[i].id = "" // a Put blob has no blocks
		}
		s.mu.Unlock()
		s.committed(name, a)
		return a, nil
	}

	ids := make([]string, len(s.blocks))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.v.opts.Concurrency)
	for i := range s.blocks {
		s.mu.Lock()
		ids[i] = s.blocks[i].id
		s.mu.Unlock()
		if ids[i] != "" {
			continue
		}
		g.Go(func() error {
			if err := s.fetch(gctx, i); err != nil {
				return err
			}
			off, end := s.extent(i)
			buf := make([]byte, end-off)
			if _, err := s.tmp.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read staging: %w", err)
			}
			s.mu.Lock()
			id, gen := s.newID(), s.blocks[i].gen
			s.mu.Unlock()
			if err := s.v.store.StageBlock(gctx, name, id, buf); err != nil {
				return err
			}
			s.mu.Lock()
			if s.blocks[i].gen == gen {
				s.blocks[i].id = id
			}
			s.mu.Unlock()
			ids[i] = id
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return blob.Attrs{}, err
	}
	a, err := s.v.store.CommitBlocks(ctx, name, ids, blob.WriteOptions{Conditions: cond, ContentMD5: md5sum})
	if err != nil {
		return blob.Attrs{}, err
	}
	s.committed(name, a)
	return a, nil
}

// committed makes the version just written the base of later reads.
func (s *writeSession) committed(name string, a blob.Attrs) {
	s.base.name, s.base.etag, s.base.size = name, a.ETag, s.size
}

// complete reports whether every block is local (the staging file holds
// the whole content).
func (s *writeSession) complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.blocks {
		if !b.local {
			return false
		}
	}
	return true
}
