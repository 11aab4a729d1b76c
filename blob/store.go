// Package blob is the one seam between blobfs and a Blob container.
//
// A Store is bound to a single container. Everything above it (the FUSE
// volume, the block cache, the upload path, prefetch, CSI) talks to Blob only
// through this interface, so that SDK errors are translated in exactly one
// place (the azstore adapter) and every feature can be unit-tested on the
// in-memory store (memblob) and integration-tested on Azurite with the same
// conformance suite (blobtest).
package blob

import (
	"context"
	"time"
)

// ETag is an opaque entity tag as returned by the service, quotes included.
// The zero value means "no condition".
type ETag string

// Attrs describes one committed blob.
type Attrs struct {
	Name         string
	Size         int64
	ETag         ETag
	LastModified time.Time
	// ContentMD5 is the whole-blob MD5 recorded at upload, if any.
	ContentMD5 []byte
	// Metadata keys are lower-case (the service folds them).
	Metadata map[string]string
	// AccessTier is the blob's tier as the service names it ("Hot",
	// "Cool", "Cold", "Archive"), or empty when unknown.
	AccessTier string
}

// TierArchive is the access tier whose blobs cannot be read until they are
// rehydrated to an online tier.
const TierArchive = "Archive"

// Archived reports whether the blob sits in the offline archive tier.
func (a Attrs) Archived() bool { return a.AccessTier == TierArchive }

// IsDirMarker reports whether the blob is a directory marker as written by
// BlobFuse2 and the Azure portal: metadata hdi_isfolder=true.
func (a Attrs) IsDirMarker() bool {
	return a.Metadata[MetaIsFolder] == "true"
}

// MetaIsFolder is the metadata key that marks a zero-length blob as a directory.
const MetaIsFolder = "hdi_isfolder"

// ListOptions selects one page of a listing.
type ListOptions struct {
	// Prefix restricts the listing to names starting with it.
	Prefix string
	// Delimiter groups names by the next occurrence of it after Prefix into
	// Page.Prefixes ("virtual directories"). Empty lists flat.
	Delimiter string
	// Marker continues a listing from a previous Page.NextMarker.
	Marker string
	// MaxResults caps the page; zero or anything above 5000 means the
	// service maximum of 5000.
	MaxResults int
	// Metadata asks for each blob's metadata (needed to see directory markers).
	Metadata bool
}

// MaxListResults is the most entries the service returns in one page.
const MaxListResults = 5000

// Page is one page of a listing. Blobs and Prefixes are each sorted by name.
type Page struct {
	Blobs []Attrs
	// Prefixes are the virtual directories, each ending in the delimiter.
	Prefixes []string
	// NextMarker is empty on the last page.
	NextMarker string
}

// Conditions make a write conditional. At most one field may be set.
type Conditions struct {
	// IfMatch succeeds only if the blob's current ETag equals it
	// (ErrStale otherwise, ErrNotFound if the blob is gone).
	IfMatch ETag
	// IfNoneMatchAny succeeds only if no blob exists under the name
	// (ErrExists otherwise).
	IfNoneMatchAny bool
}

// WriteOptions apply to Put, CommitBlocks and Copy.
type WriteOptions struct {
	Conditions
	Metadata    map[string]string
	ContentType string
	// ContentMD5 is recorded as the blob's Content-MD5 (CommitBlocks only;
	// Put computes it from the data).
	ContentMD5 []byte
}

// Block is one committed block of a block blob.
type Block struct {
	ID   string
	Size int64
}

// Limits of block blobs, as documented for the current service version.
const (
	MaxBlockSize  = 4000 << 20
	MaxBlockCount = 50000
)

// Store is one Blob container. Names are blob names without a leading slash.
// Every method returns errors that wrap this package's sentinels where one
// applies (errors.Is(err, ErrNotFound) etc.), with the original cause kept.
type Store interface {
	// Stat returns the attributes of a committed blob.
	Stat(ctx context.Context, name string) (Attrs, error)

	// List returns one page of the listing described by opts.
	List(ctx context.Context, opts ListOptions) (Page, error)

	// ReadAt fills p with the blob's bytes starting at off, with
	// io.ReaderAt semantics: n < len(p) only together with an error, io.EOF
	// when the blob ends. A non-empty etag pins the read: if the blob has
	// changed, ReadAt returns ErrStale and no bytes of the new version.
	ReadAt(ctx context.Context, name string, etag ETag, p []byte, off int64) (int, error)

	// Put writes a whole blob in one request.
	Put(ctx context.Context, name string, data []byte, opts WriteOptions) (Attrs, error)

	// StageBlock uploads one uncommitted block. id must be valid base64 and
	// all ids of one blob must have the same length (see BlockID).
	StageBlock(ctx context.Context, name, id string, data []byte) error

	// CommitBlocks makes the listed staged or committed blocks the blob's
	// content, atomically: readers see the old blob or the new one.
	CommitBlocks(ctx context.Context, name string, ids []string, opts WriteOptions) (Attrs, error)

	// Blocks lists the committed blocks of a blob, in order.
	Blocks(ctx context.Context, name string) ([]Block, error)

	// Delete removes a blob. Conditions.IfMatch guards against deleting a
	// version the caller has not seen.
	Delete(ctx context.Context, name string, cond Conditions) error

	// Copy copies src to dst inside the container on the server side and
	// returns when the copy has completed. srcETag, when set, pins the source.
	Copy(ctx context.Context, src string, srcETag ETag, dst string, opts WriteOptions) (Attrs, error)

	// SetMetadata replaces a blob's metadata.
	SetMetadata(ctx context.Context, name string, md map[string]string, cond Conditions) (Attrs, error)
}
