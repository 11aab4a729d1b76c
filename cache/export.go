package cache

import (
	"github.com/blobfs/blobfs/blob"
)

// Object returns the cache Object the Reader reads blob name at etag
// (size bytes) as: the same key, identity and validation. Prefetch fills
// through it so that what it caches is exactly what the read path finds.
func (r *Reader) Object(name string, etag blob.ETag, size int64) Object {
	return r.object(name, etag, size)
}

// Fetch returns the FetchFunc the Reader's misses use for name at etag.
func (r *Reader) Fetch(name string, etag blob.ETag) FetchFunc {
	return StoreFetch(r.store, name, etag)
}

// Cache returns the Cache the Reader fills.
func (r *Reader) Cache() *Cache { return r.c }

// InflightFetches is the number of blocks being fetched from the backend
// right now (by readers, readahead and prefetch).
func (c *Cache) InflightFetches() int {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return len(c.flights)
}
