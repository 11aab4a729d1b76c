package azstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/blobfs/blobfs/blob"
)

// splitReadTries bounds how often an unpinned split read starts over when
// its pieces came from different versions of the blob.
const splitReadTries = 3

// ReadAt implements blob.Store with ranged GETs straight into p.
//
// With range checksums (the default) each GET covers at most ChecksumRange
// bytes and asks for the range's MD5, which is checked before ReadAt
// returns; a mismatch or a body cut short is retried up to MaxRetries
// times and then reported as blob.ErrChecksum (or blob.ErrUnavailable),
// with n = 0: ReadAt never returns unverified bytes as read. Larger reads
// are split into such ranges fetched concurrently; an unpinned split read
// checks that every piece came from the same ETag and size, and starts
// over if the blob changed in between. Without range checksums one GET
// covers all of p.
//
// Offsets at or past the end give 0, io.EOF (the service answers 416
// InvalidRange there; Azurite answers an empty 206 at exactly the end).
func (s *Store) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	if err := checkRead(ctx, name, off); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	verify := !s.cfg.DisableRangeChecksums
	bc := s.blobClient(name)
	if !verify || len(p) <= ChecksumRange {
		r, err := s.getRange(ctx, bc, name, etag, [][]byte{p}, off, verify)
		if err != nil {
			return 0, err
		}
		if r.n < len(p) {
			return r.n, io.EOF
		}
		return r.n, nil
	}
	for try := 1; ; try++ {
		parts, err := s.getParts(ctx, bc, name, etag, p, off)
		if err != nil {
			return 0, err
		}
		n, err := assemble(parts, off, len(p))
		if err == nil {
			if n < len(p) {
				return n, io.EOF
			}
			return n, nil
		}
		if etag != "" || try == splitReadTries {
			return 0, fmt.Errorf("read %q at %d: %w", name, off, err)
		}
		s.log.Debug("blob changed during a split read, reading again", "blob", name, "offset", off, "len", len(p), "err", err)
	}
}

// rangeResult is what one ranged GET returned.
type rangeResult struct {
	off  int64 // where the range starts in the blob
	len  int   // bytes asked for
	n    int   // bytes read (and verified) into the buffer
	size int64 // blob size from Content-Range; -1 when not known
	etag blob.ETag
	past bool // 416: the range starts at or past the end
}

// getParts fetches p in ChecksumRange pieces, at most RangeConcurrency at
// a time. The first failure cancels the other pieces.
func (s *Store) getParts(ctx context.Context, bc *sdkblob.Client, name string, etag blob.ETag, p []byte, off int64) ([]rangeResult, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := (len(p) + ChecksumRange - 1) / ChecksumRange
	results := make([]rangeResult, n)
	errs := make([]error, n)
	sem := make(chan struct{}, s.cfg.RangeConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		lo, hi := i*ChecksumRange, min((i+1)*ChecksumRange, len(p))
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			results[i], errs[i] = s.getRange(ctx, bc, name, etag, [][]byte{p[lo:hi]}, off+int64(lo), true)
			if errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("read %q: %w", name, err)
	}
	// Report the failure that cancelled the rest, not the cancellations.
	var first error
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	return results, nil
}

// checkRead refuses a read before any request: a bad name, a negative
// offset, a context already done.
func checkRead(ctx context.Context, name string, off int64) error {
	if err := blob.ValidateName(name); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if off < 0 {
		return fmt.Errorf("read %q at negative offset %d: %w", name, off, blob.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("read %q: %w", name, err)
	}
	return nil
}

// ReadAtV implements blob.VectorReader: with range checksums off, one GET
// streams into the buffers in turn; with them on (GETs are then split in
// checksummed pieces) it reads into one buffer and copies.
func (s *Store) ReadAtV(ctx context.Context, name string, etag blob.ETag, bufs [][]byte, off int64) (int, error) {
	length := totalLen(bufs)
	if !s.cfg.DisableRangeChecksums && length > ChecksumRange {
		return blob.ReadAtVCopy(ctx, s, name, etag, bufs, off)
	}
	if err := checkRead(ctx, name, off); err != nil {
		return 0, err
	}
	if length == 0 {
		return 0, nil
	}
	r, err := s.getRange(ctx, s.blobClient(name), name, etag, bufs, off, !s.cfg.DisableRangeChecksums)
	if err != nil {
		return 0, err
	}
	if r.n < length {
		return r.n, io.EOF
	}
	return r.n, nil
}

// errInconsistent means the pieces of a split read disagree about the
// blob's version or size: it changed between their GETs.
var errInconsistent = fmt.Errorf("pieces of a split read saw different versions of the blob: %w", blob.ErrStale)

// assemble checks that parts, which tile [off, off+length), describe one
// version of the blob and returns how many leading bytes of the buffer are
// valid.
func assemble(parts []rangeResult, off int64, length int) (int, error) {
	size, etag := int64(-1), blob.ETag("")
	for _, r := range parts {
		if r.past {
			continue
		}
		if size >= 0 && (r.size != size || r.etag != etag) {
			return 0, errInconsistent
		}
		size, etag = r.size, r.etag
	}
	if size < 0 {
		return 0, nil // every piece is past the end
	}
	for _, r := range parts {
		want := int(max(0, min(int64(r.len), size-r.off)))
		if r.n != want || r.past && want > 0 {
			return 0, errInconsistent
		}
	}
	return int(max(0, min(int64(length), size-off))), nil
}

// getRange reads p from off with one GET, retrying transfer failures
// (damaged or truncated bodies) that the SDK's retry policy does not see
// because they happen after the response headers.
func (s *Store) getRange(ctx context.Context, bc *sdkblob.Client, name string, etag blob.ETag, p [][]byte, off int64, verify bool) (rangeResult, error) {
	for try := 0; ; try++ {
		r, err := s.getRangeOnce(ctx, bc, name, etag, p, off, verify)
		if err == nil || try >= s.cfg.MaxRetries || ctx.Err() != nil ||
			!(errors.Is(err, blob.ErrChecksum) || errors.Is(err, errBody)) {
			return r, err
		}
		s.log.Warn("retrying ranged read", "blob", name, "offset", off, "len", totalLen(p), "try", try+1, "err", err)
	}
}

// errBody marks a failure while reading a response body.
var errBody = errors.New("reading response body")

func (s *Store) getRangeOnce(ctx context.Context, bc *sdkblob.Client, name string, etag blob.ETag, p [][]byte, off int64, verify bool) (rangeResult, error) {
	length := totalLen(p)
	res := rangeResult{off: off, len: length, size: -1}
	opts := &sdkblob.DownloadStreamOptions{Range: sdkblob.HTTPRange{Offset: off, Count: int64(length)}}
	if verify {
		opts.RangeGetContentMD5 = to.Ptr(true)
	}
	if etag != "" {
		e := azcore.ETag(etag)
		opts.AccessConditions = &sdkblob.AccessConditions{ModifiedAccessConditions: &sdkblob.ModifiedAccessConditions{IfMatch: &e}}
	}
	resp, err := bc.DownloadStream(ctx, opts)
	if err != nil {
		if bloberror.HasCode(err, bloberror.InvalidRange) {
			res.past = true
			return res, nil
		}
		return res, translate(ctx, "read", name, blob.Conditions{}, err)
	}
	defer resp.Body.Close()
	cl := deref(resp.ContentLength)
	if resp.ContentLength == nil || cl < 0 || cl > int64(length) {
		return res, fmt.Errorf("read %q at %d: service sent %d bytes for a %d-byte range", name, off, cl, length)
	}
	// Straight into the caller's buffer, no copy on the hot path, hashing
	// each chunk as it arrives so the MD5 overlaps the network wait.
	var h hash.Hash
	if verify {
		h = md5.New()
	}
	if err := readFullV(resp.Body, truncate(p, int(cl)), h); err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("read %q: %w", name, ctx.Err())
		}
		return res, fmt.Errorf("read %q at %d: %w: %w", name, off, errBody, translate(ctx, "read", name, blob.Conditions{}, err))
	}
	if verify && cl > 0 {
		if len(resp.ContentMD5) == 0 {
			return res, fmt.Errorf("read %q at %d+%d: the service sent no Content-MD5 for the range: %w", name, off, cl, blob.ErrChecksum)
		}
		if sum := h.Sum(nil); !bytes.Equal(sum, resp.ContentMD5) {
			return res, fmt.Errorf("read %q at %d+%d: MD5 %x, service says %x: %w", name, off, cl, sum, resp.ContentMD5, blob.ErrChecksum)
		}
	}
	res.n = int(cl)
	res.etag = etagOf(resp.ETag)
	res.size = totalSize(deref(resp.ContentRange))
	if res.size < 0 && cl < int64(length) {
		// No Content-Range (a 200): the body is the whole blob from off.
		res.size = off + cl
	}
	return res, nil
}

// readFullV is readFull over bufs in order.
func readFullV(r io.Reader, bufs [][]byte, h hash.Hash) error {
	for _, b := range bufs {
		if err := readFull(r, b, h); err != nil {
			return err
		}
	}
	return nil
}

// totalLen is the bytes bufs hold.
func totalLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// truncate returns bufs cut to their first n bytes.
func truncate(bufs [][]byte, n int) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n <= 0 {
			break
		}
		m := min(n, len(b))
		out = append(out, b[:m])
		n -= m
	}
	return out
}

// readFull is io.ReadFull that also feeds every chunk read to h (if not
// nil).
func readFull(r io.Reader, p []byte, h hash.Hash) error {
	for n := 0; n < len(p); {
		m, err := r.Read(p[n:])
		if h != nil {
			h.Write(p[n : n+m])
		}
		n += m
		switch {
		case n == len(p):
			return nil
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
	return nil
}

// totalSize parses the size out of a Content-Range such as
// "bytes 0-99/1000"; -1 if absent or unknown ("*").
func totalSize(contentRange string) int64 {
	_, total, ok := strings.Cut(contentRange, "/")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return -1
	}
	return n
}
