package blob

import (
	"errors"
	"fmt"
	"io/fs"
)

// Sentinel errors. Adapters wrap them together with the original cause
// (fmt.Errorf("...: %w: %w", ErrX, cause)) so callers match with errors.Is
// and logs still show what the service said.
var (
	// ErrNotFound: the blob does not exist. Wraps fs.ErrNotExist.
	ErrNotFound = fmt.Errorf("blob not found: %w", fs.ErrNotExist)
	// ErrContainerNotFound: the container itself does not exist. It does not
	// wrap ErrNotFound: a missing container is a configuration problem, not
	// a missing file.
	ErrContainerNotFound = errors.New("container not found")
	// ErrStale: an IfMatch condition or a pinned ETag no longer holds (HTTP 412).
	ErrStale = errors.New("blob changed (etag mismatch)")
	// ErrExists: an IfNoneMatchAny condition failed, the name is taken.
	ErrExists = fmt.Errorf("blob already exists: %w", fs.ErrExist)
	// ErrPermission: the credential may not do this (HTTP 401/403).
	// Wraps fs.ErrPermission.
	ErrPermission = fmt.Errorf("permission denied by storage: %w", fs.ErrPermission)
	// ErrThrottled: the service kept answering 503/500 busy after retries.
	ErrThrottled = errors.New("storage throttled the request")
	// ErrInvalid: the request was malformed (bad block id, bad name, limits).
	ErrInvalid = fmt.Errorf("invalid storage request: %w", fs.ErrInvalid)
	// ErrTooLarge: a block blob limit (block size or block count) would be exceeded.
	ErrTooLarge = errors.New("block blob limit exceeded")
	// ErrChecksum: data arrived with a transfer checksum that did not match.
	ErrChecksum = errors.New("transfer checksum mismatch")
	// ErrArchived: the blob is in the archive tier and must be rehydrated
	// (set to Hot or Cool) before it can be read. Wraps fs.ErrPermission:
	// the data is there, but not accessible now.
	ErrArchived = fmt.Errorf("blob is in the Archive tier; rehydrate it to Hot or Cool (az storage blob set-tier) to read it: %w", fs.ErrPermission)
	// ErrUnavailable: the endpoint could not be reached (after retries).
	ErrUnavailable = errors.New("storage endpoint unavailable")
)
