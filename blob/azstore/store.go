// Package azstore is the blob.Store on Azure Blob Storage (and Azurite),
// built on the azblob SDK. It is the only place that knows the SDK: service
// and transport errors are translated to blob's sentinels here (errors.go),
// and every transfer carries a checksum the other side verifies:
//
//   - Put sends the data's MD5 as Content-MD5; the service rejects a body
//     that does not match (→ blob.ErrChecksum) and records it as the
//     blob's Content-MD5.
//   - StageBlock sends the block's CRC64 (x-ms-content-crc64); the service
//     rejects a block that does not match.
//   - ReadAt asks for the MD5 of each range of at most 4 MiB
//     (x-ms-range-get-content-md5) and checks it before returning a byte;
//     larger reads are split into 4 MiB ranges fetched concurrently.
//
// Not verified end to end: CommitBlocks' body (the block list XML; the
// blocks themselves were verified when staged, and the caller's whole-file
// MD5 is recorded, not checked by the service), List and property
// responses (metadata, sizes, ETags), and a server-side Copy (done inside
// the service). Reads with Config.DisableRangeChecksums verify nothing
// beyond TCP/TLS.
package azstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"hash/crc64"
	"log/slog"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/blobfs/blobfs/blob"
)

// MaxPutSize is the most one Put Blob request may carry.
const MaxPutSize = 5000 << 20

// crc64Table is the polynomial Azure Storage uses for x-ms-content-crc64.
var crc64Table = crc64.MakeTable(0x9A6C9329AC4BC9B5)

// Store is one container. It is safe for concurrent use.
type Store struct {
	cfg  Config // defaults applied
	cont *container.Client
	log  *slog.Logger
}

var _ blob.Store = (*Store)(nil)

// New returns a Store for cfg.Container. It sends no request: a missing
// container shows up as blob.ErrContainerNotFound on first use.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cont, err := cfg.containerClient(cfg.Container)
	if err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, cont: cont, log: cfg.Logger.With("container", cfg.Container)}, nil
}

// blobClient returns the SDK client for name. The SDK path-escapes the
// whole name (url.PathEscape), so spaces, '%', '?', '#' and non-ASCII
// round-trip; '/' goes out as %2F, which the service (and Azurite) decode,
// so virtual directories work as with every other Azure SDK.
func (s *Store) blobClient(name string) *sdkblob.Client { return s.cont.NewBlobClient(name) }

func (s *Store) blockClient(name string) *blockblob.Client { return s.cont.NewBlockBlobClient(name) }

func accessConditions(op, name string, c blob.Conditions) (*sdkblob.AccessConditions, error) {
	switch {
	case c.IfMatch != "" && c.IfNoneMatchAny:
		return nil, fmt.Errorf("%s %q: both IfMatch and IfNoneMatchAny set: %w", op, name, blob.ErrInvalid)
	case c.IfMatch != "":
		e := azcore.ETag(c.IfMatch)
		return &sdkblob.AccessConditions{ModifiedAccessConditions: &sdkblob.ModifiedAccessConditions{IfMatch: &e}}, nil
	case c.IfNoneMatchAny:
		return &sdkblob.AccessConditions{ModifiedAccessConditions: &sdkblob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}, nil
	}
	return nil, nil
}

// toSDKMeta lower-cases keys: the service stores them as sent but matches
// them case-insensitively, and blob.Attrs promises lower case.
func toSDKMeta(md map[string]string) map[string]*string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]*string, len(md))
	for k, v := range md {
		out[strings.ToLower(k)] = to.Ptr(v)
	}
	return out
}

// fromSDKMeta lower-cases keys too: HTTP header canonicalization turns
// x-ms-meta-hdi_isfolder into "Hdi_isfolder".
func fromSDKMeta(md map[string]*string) map[string]string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		if v != nil {
			out[strings.ToLower(k)] = *v
		}
	}
	return out
}

func lowerMeta(md map[string]string) map[string]string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		out[strings.ToLower(k)] = v
	}
	return out
}

// etagOf returns a version's ETag in one spelling, quoted as the service's
// ETag headers are. Listings spell the same ETag without quotes; two
// spellings of one version would give it two cache keys and make a
// version check fail (ESTALE) on an unchanged blob.
func etagOf(e *azcore.ETag) blob.ETag {
	if e == nil || *e == "" {
		return ""
	}
	v := string(*e)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return blob.ETag(v)
	}
	if strings.HasPrefix(v, "W/") {
		return blob.ETag(v) // a weak ETag is never a blob's; keep it as it came
	}
	return blob.ETag(`"` + v + `"`)
}

func deref[T any](p *T) (v T) {
	if p != nil {
		v = *p
	}
	return v
}

func propsAttrs(name string, p sdkblob.GetPropertiesResponse) blob.Attrs {
	return blob.Attrs{
		Name:         name,
		Size:         deref(p.ContentLength),
		ETag:         etagOf(p.ETag),
		LastModified: deref(p.LastModified),
		ContentMD5:   bytes.Clone(p.ContentMD5),
		Metadata:     fromSDKMeta(p.Metadata),
		AccessTier:   deref(p.AccessTier),
	}
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Attrs, error) {
	if err := blob.ValidateName(name); err != nil {
		return blob.Attrs{}, fmt.Errorf("stat: %w", err)
	}
	p, err := s.blobClient(name).GetProperties(ctx, nil)
	if err != nil {
		return blob.Attrs{}, translate(ctx, "stat", name, blob.Conditions{}, err)
	}
	return propsAttrs(name, p), nil
}

// readBack returns the attributes of the version a write just produced.
// The write already succeeded, so failing here must not fail the write:
// if the blob changed again (or the request failed) it returns what the
// write itself knows, with Size -1 for "unknown".
func (s *Store) readBack(ctx context.Context, name string, etag azcore.ETag, fallback blob.Attrs) blob.Attrs {
	p, err := s.blobClient(name).GetProperties(ctx, &sdkblob.GetPropertiesOptions{
		AccessConditions: &sdkblob.AccessConditions{ModifiedAccessConditions: &sdkblob.ModifiedAccessConditions{IfMatch: &etag}},
	})
	if err != nil {
		s.log.Debug("reading back attributes after a write", "blob", name, "err", translate(ctx, "stat", name, blob.Conditions{}, err))
		fallback.Size = -1
		return fallback
	}
	return propsAttrs(name, p)
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context, opts blob.ListOptions) (blob.Page, error) {
	var maxResults *int32
	if opts.MaxResults > 0 && opts.MaxResults < blob.MaxListResults {
		maxResults = to.Ptr(int32(opts.MaxResults))
	}
	include := container.ListBlobsInclude{Metadata: opts.Metadata}
	var (
		items    []*container.BlobItem
		prefixes []*container.BlobPrefix
		next     *string
	)
	if opts.Delimiter == "" {
		resp, err := s.cont.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
			Include: include, Marker: nonEmpty(opts.Marker), MaxResults: maxResults, Prefix: nonEmpty(opts.Prefix),
		}).NextPage(ctx)
		if err != nil {
			return blob.Page{}, translate(ctx, "list", opts.Prefix, blob.Conditions{}, err)
		}
		if resp.Segment != nil {
			items = resp.Segment.BlobItems
		}
		next = resp.NextMarker
	} else {
		resp, err := s.cont.NewListBlobsHierarchyPager(opts.Delimiter, &container.ListBlobsHierarchyOptions{
			Include: include, Marker: nonEmpty(opts.Marker), MaxResults: maxResults, Prefix: nonEmpty(opts.Prefix),
		}).NextPage(ctx)
		if err != nil {
			return blob.Page{}, translate(ctx, "list", opts.Prefix, blob.Conditions{}, err)
		}
		if resp.Segment != nil {
			items, prefixes = resp.Segment.BlobItems, resp.Segment.BlobPrefixes
		}
		next = resp.NextMarker
	}
	page := blob.Page{NextMarker: deref(next)}
	for _, it := range items {
		if it == nil || it.Name == nil {
			continue
		}
		a := blob.Attrs{Name: *it.Name, Metadata: fromSDKMeta(it.Metadata)}
		if p := it.Properties; p != nil {
			a.Size = deref(p.ContentLength)
			a.ETag = etagOf(p.ETag)
			a.LastModified = deref(p.LastModified)
			a.ContentMD5 = bytes.Clone(p.ContentMD5)
			if p.AccessTier != nil {
				a.AccessTier = string(*p.AccessTier)
			}
		}
		page.Blobs = append(page.Blobs, a)
	}
	for _, p := range prefixes {
		if p != nil && p.Name != nil {
			page.Prefixes = append(page.Prefixes, *p.Name)
		}
	}
	return page, nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Put implements blob.Store. The data's MD5 travels as Content-MD5, so the
// service refuses a body damaged on the way (blob.ErrChecksum), and is
// recorded as the blob's Content-MD5.
func (s *Store) Put(ctx context.Context, name string, data []byte, opts blob.WriteOptions) (blob.Attrs, error) {
	if err := blob.ValidateName(name); err != nil {
		return blob.Attrs{}, fmt.Errorf("put: %w", err)
	}
	if len(data) > MaxPutSize {
		return blob.Attrs{}, fmt.Errorf("put %q: %d bytes in one request: %w", name, len(data), blob.ErrTooLarge)
	}
	ac, err := accessConditions("put", name, opts.Conditions)
	if err != nil {
		return blob.Attrs{}, err
	}
	sum := md5.Sum(data)
	resp, err := s.blockClient(name).Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
		Metadata:                toSDKMeta(opts.Metadata),
		HTTPHeaders:             &sdkblob.HTTPHeaders{BlobContentMD5: sum[:], BlobContentType: nonEmpty(opts.ContentType)},
		TransactionalValidation: sdkblob.TransferValidationTypeMD5(sum[:]),
		AccessConditions:        ac,
	})
	if err != nil {
		return blob.Attrs{}, translate(ctx, "put", name, opts.Conditions, err)
	}
	return blob.Attrs{
		Name:         name,
		Size:         int64(len(data)),
		ETag:         etagOf(resp.ETag),
		LastModified: deref(resp.LastModified),
		ContentMD5:   sum[:],
		Metadata:     lowerMeta(opts.Metadata),
	}, nil
}

// StageBlock implements blob.Store. The block's CRC64 travels as
// x-ms-content-crc64, so the service refuses a damaged block
// (blob.ErrChecksum) instead of committing it later.
func (s *Store) StageBlock(ctx context.Context, name, id string, data []byte) error {
	if err := blob.ValidateName(name); err != nil {
		return fmt.Errorf("stage block: %w", err)
	}
	if err := blob.ValidateBlockID(id); err != nil {
		return fmt.Errorf("stage block of %q: %w", name, err)
	}
	if len(data) > blob.MaxBlockSize {
		return fmt.Errorf("stage block of %q: %d bytes: %w", name, len(data), blob.ErrTooLarge)
	}
	crc := crc64.Checksum(data, crc64Table)
	_, err := s.blockClient(name).StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(data)), &blockblob.StageBlockOptions{
		TransactionalValidation: sdkblob.TransferValidationTypeCRC64(crc),
	})
	return translate(ctx, "stage block of", name, blob.Conditions{}, err)
}

// CommitBlocks implements blob.Store. opts.ContentMD5 is recorded as the
// blob's Content-MD5 (x-ms-blob-content-md5); the service does not check
// it against the blocks.
func (s *Store) CommitBlocks(ctx context.Context, name string, ids []string, opts blob.WriteOptions) (blob.Attrs, error) {
	if err := blob.ValidateName(name); err != nil {
		return blob.Attrs{}, fmt.Errorf("commit: %w", err)
	}
	if len(ids) > blob.MaxBlockCount {
		return blob.Attrs{}, fmt.Errorf("commit %q: %d blocks: %w", name, len(ids), blob.ErrTooLarge)
	}
	if n := len(opts.ContentMD5); n != 0 && n != md5.Size {
		return blob.Attrs{}, fmt.Errorf("commit %q: ContentMD5 has %d bytes, want %d: %w", name, n, md5.Size, blob.ErrInvalid)
	}
	ac, err := accessConditions("commit", name, opts.Conditions)
	if err != nil {
		return blob.Attrs{}, err
	}
	resp, err := s.blockClient(name).CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		Metadata:         toSDKMeta(opts.Metadata),
		HTTPHeaders:      &sdkblob.HTTPHeaders{BlobContentMD5: opts.ContentMD5, BlobContentType: nonEmpty(opts.ContentType)},
		AccessConditions: ac,
	})
	if err != nil {
		return blob.Attrs{}, translate(ctx, "commit", name, opts.Conditions, err)
	}
	return s.readBack(ctx, name, deref(resp.ETag), blob.Attrs{
		Name:         name,
		ETag:         etagOf(resp.ETag),
		LastModified: deref(resp.LastModified),
		ContentMD5:   bytes.Clone(opts.ContentMD5),
		Metadata:     lowerMeta(opts.Metadata),
	}), nil
}

// Blocks implements blob.Store. A blob written by Put has no committed
// block list and reports none.
func (s *Store) Blocks(ctx context.Context, name string) ([]blob.Block, error) {
	if err := blob.ValidateName(name); err != nil {
		return nil, fmt.Errorf("block list: %w", err)
	}
	resp, err := s.blockClient(name).GetBlockList(ctx, blockblob.BlockListTypeCommitted, nil)
	if err != nil {
		return nil, translate(ctx, "block list of", name, blob.Conditions{}, err)
	}
	out := make([]blob.Block, 0, len(resp.CommittedBlocks))
	for _, b := range resp.CommittedBlocks {
		if b != nil {
			out = append(out, blob.Block{ID: deref(b.Name), Size: deref(b.Size)})
		}
	}
	return out, nil
}

// Delete implements blob.Store. A blob with snapshots is not deleted (the
// service answers 409 SnapshotsPresent): blobfs never removes snapshots
// someone else took.
func (s *Store) Delete(ctx context.Context, name string, cond blob.Conditions) error {
	if err := blob.ValidateName(name); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	ac, err := accessConditions("delete", name, cond)
	if err != nil {
		return err
	}
	_, err = s.blobClient(name).Delete(ctx, &sdkblob.DeleteOptions{AccessConditions: ac})
	return translate(ctx, "delete", name, cond, err)
}

// SetMetadata implements blob.Store.
func (s *Store) SetMetadata(ctx context.Context, name string, md map[string]string, cond blob.Conditions) (blob.Attrs, error) {
	if err := blob.ValidateName(name); err != nil {
		return blob.Attrs{}, fmt.Errorf("set metadata: %w", err)
	}
	ac, err := accessConditions("set metadata", name, cond)
	if err != nil {
		return blob.Attrs{}, err
	}
	resp, err := s.blobClient(name).SetMetadata(ctx, toSDKMeta(md), &sdkblob.SetMetadataOptions{AccessConditions: ac})
	if err != nil {
		return blob.Attrs{}, translate(ctx, "set metadata", name, cond, err)
	}
	return s.readBack(ctx, name, deref(resp.ETag), blob.Attrs{
		Name:         name,
		ETag:         etagOf(resp.ETag),
		LastModified: deref(resp.LastModified),
		Metadata:     lowerMeta(md),
	}), nil
}

// Copy polling: the service copies inside an account quickly (Azurite
// finishes before answering), so start fast and back off to a ceiling.
const (
	copyPollFirst = 20 * time.Millisecond
	copyPollMax   = 2 * time.Second
)

// Copy implements blob.Store with the asynchronous Copy Blob operation,
// which the service authorizes with this request's own credential for a
// source in the same account, then polls the destination until the copy
// has succeeded, failed or been aborted. (Copy Blob From URL and Put Blob
// From URL would need the source readable by URL — a SAS or a token in
// x-ms-copy-source-authorization — and the former stops at 256 MiB.)
// opts.ContentType is not applied: Copy Blob takes the source's
// properties. If ctx ends while the copy is pending, the copy is aborted.
func (s *Store) Copy(ctx context.Context, src string, srcETag blob.ETag, dst string, opts blob.WriteOptions) (blob.Attrs, error) {
	if err := blob.ValidateName(src); err != nil {
		return blob.Attrs{}, fmt.Errorf("copy: source: %w", err)
	}
	if err := blob.ValidateName(dst); err != nil {
		return blob.Attrs{}, fmt.Errorf("copy: %w", err)
	}
	what := fmt.Sprintf("%q to", src)
	ac, err := accessConditions("copy", dst, opts.Conditions)
	if err != nil {
		return blob.Attrs{}, err
	}
	copyOpts := &sdkblob.StartCopyFromURLOptions{
		// nil keeps the source's metadata, as the service does.
		Metadata:         toSDKMeta(opts.Metadata),
		AccessConditions: ac,
	}
	if srcETag != "" {
		e := azcore.ETag(srcETag)
		copyOpts.SourceModifiedAccessConditions = &sdkblob.SourceModifiedAccessConditions{SourceIfMatch: &e}
	}
	dstClient := s.blobClient(dst)
	resp, err := dstClient.StartCopyFromURL(ctx, s.blobClient(src).URL(), copyOpts)
	if err != nil {
		terr := translate(ctx, "copy "+what, dst, opts.Conditions, err)
		if errors.Is(terr, blob.ErrExists) && srcETag != "" && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
			// A bare 412 may be either condition failing (Azurite says
			// ConditionNotMet for a stale source too): if the
			// destination is absent, it was the source.
			if _, serr := s.Stat(ctx, dst); errors.Is(serr, blob.ErrNotFound) {
				return blob.Attrs{}, fmt.Errorf("copy %s %q: source changed: %w: %w", what, dst, blob.ErrStale, compact(err))
			}
		}
		return blob.Attrs{}, terr
	}
	copyID := deref(resp.CopyID)
	// One read of the destination even when the copy finished at once:
	// the attributes come from it.
	p, err := s.copyProps(ctx, dstClient, what, dst, copyID)
	for delay := copyPollFirst; err == nil && deref(p.CopyStatus) == sdkblob.CopyStatusTypePending; delay = min(2*delay, copyPollMax) {
		select {
		case <-ctx.Done():
			s.abortCopy(ctx, dstClient, dst, copyID)
			return blob.Attrs{}, fmt.Errorf("copy %s %q: %w", what, dst, ctx.Err())
		case <-time.After(delay):
		}
		p, err = s.copyProps(ctx, dstClient, what, dst, copyID)
	}
	if err != nil {
		return blob.Attrs{}, err
	}
	if st := deref(p.CopyStatus); st != sdkblob.CopyStatusTypeSuccess {
		return blob.Attrs{}, fmt.Errorf("copy %s %q: copy %s: %s", what, dst, st, deref(p.CopyStatusDescription))
	}
	return propsAttrs(dst, p), nil
}

// copyProps reads the destination of copy copyID.
func (s *Store) copyProps(ctx context.Context, c *sdkblob.Client, what, dst, copyID string) (sdkblob.GetPropertiesResponse, error) {
	p, err := c.GetProperties(ctx, nil)
	if err != nil {
		return p, translate(ctx, "copy "+what, dst, blob.Conditions{}, err)
	}
	if deref(p.CopyID) != copyID {
		return p, fmt.Errorf("copy %s %q: destination was replaced during the copy: %w", what, dst, blob.ErrStale)
	}
	return p, nil
}

// abortCopy stops a pending copy the caller gave up on, so it does not
// finish later behind their back. It outlives ctx's cancellation briefly.
func (s *Store) abortCopy(ctx context.Context, c *sdkblob.Client, dst, copyID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := c.AbortCopyFromURL(ctx, copyID, nil); err != nil {
		s.log.Warn("aborting a cancelled copy", "blob", dst, "err", translate(ctx, "abort copy to", dst, blob.Conditions{}, err))
	}
}
