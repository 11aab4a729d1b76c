package blob

import "context"

// VectorReader is implemented by stores that can read consecutive bytes
// into several buffers with one request: a cache that keeps blocks in
// separate allocations fetches a run of them with one ranged GET and no
// copy to split it.
type VectorReader interface {
	// ReadAtV reads the blob's bytes from off into bufs, in order, with
	// ReadAt's semantics for the buffers taken as one: n is the total,
	// short only with an error (io.EOF at the blob's end).
	ReadAtV(ctx context.Context, name string, etag ETag, bufs [][]byte, off int64) (int, error)
}

// ReadAtV reads into bufs through s's VectorReader, or, for a store without
// one, with one ReadAt into a temporary buffer that is then copied out.
func ReadAtV(ctx context.Context, s Store, name string, etag ETag, bufs [][]byte, off int64) (int, error) {
	if v, ok := s.(VectorReader); ok {
		return v.ReadAtV(ctx, name, etag, bufs, off)
	}
	return ReadAtVCopy(ctx, s, name, etag, bufs, off)
}

// ReadAtVCopy implements ReadAtV with one ReadAt into a temporary buffer,
// copied out into bufs: for stores that cannot do better for some reads.
func ReadAtVCopy(ctx context.Context, s Store, name string, etag ETag, bufs [][]byte, off int64) (int, error) {
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	tmp := make([]byte, total)
	n, err := s.ReadAt(ctx, name, etag, tmp, off)
	scatter(bufs, tmp[:n])
	return n, err
}

// scatter copies p into bufs in order.
func scatter(bufs [][]byte, p []byte) {
	for _, b := range bufs {
		if len(p) == 0 {
			return
		}
		p = p[copy(b, p):]
	}
}
