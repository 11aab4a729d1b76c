// Package memblob is an in-memory blob.Store for unit tests. It follows the
// service's semantics that blobfs relies on: ETags change on every write,
// uncommitted blocks are dropped at commit, listings are sorted and paged at
// 5000, conditions fail with the same sentinels as the azstore adapter.
package memblob

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// Store is an in-memory container. The zero value is not usable; call New.
type Store struct {
	mu sync.Mutex
	// GUARDED_BY(mu)
	blobs     map[string]*object
	staged    map[string]map[string][]byte // blob name -> block id -> data
	seq       uint64
	exists    bool
	throttled int // injected 503s still to answer
	// maxRetries mirrors the SDK retry policy the adapter uses: an
	// operation survives up to this many injected 503s.
	maxRetries int
	now        func() time.Time
}

type object struct {
	attrs  blob.Attrs
	data   []byte
	blocks []committedBlock
}

type committedBlock struct {
	id   string
	data []byte
}

var _ blob.Store = (*Store)(nil)

// New returns an empty, existing container.
func New() *Store {
	return &Store{
		blobs:      map[string]*object{},
		staged:     map[string]map[string][]byte{},
		exists:     true,
		maxRetries: 3,
		now:        time.Now,
	}
}

// NewMissing returns a store whose container does not exist: every
// operation fails with blob.ErrContainerNotFound.
func NewMissing() *Store {
	s := New()
	s.exists = false
	return s
}

// InjectThrottle makes the next n request attempts answer 503 Server Busy.
// Like the SDK's retry policy, an operation retries up to 3 times, so fewer
// than 4 injected faults are invisible to the caller except as delay.
func (s *Store) InjectThrottle(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttled = n
}

// begin takes the lock and applies container existence and injected faults.
// The caller must unlock.
func (s *Store) begin(ctx context.Context, op string) error {
	s.mu.Lock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if !s.exists {
		return fmt.Errorf("%s: %w", op, blob.ErrContainerNotFound)
	}
	for attempt := 0; s.throttled > 0; attempt++ {
		s.throttled--
		if attempt >= s.maxRetries {
			return fmt.Errorf("%s: %w after %d attempts", op, blob.ErrThrottled, attempt+1)
		}
	}
	return nil
}

func (s *Store) nextETag() blob.ETag {
	s.seq++
	return blob.ETag(fmt.Sprintf("\"0x8DE%012X\"", s.seq))
}

func (s *Store) lookup(op, name string) (*object, error) {
	o, ok := s.blobs[name]
	if !ok {
		return nil, fmt.Errorf("%s %q: %w", op, name, blob.ErrNotFound)
	}
	return o, nil
}

func checkConditions(op, name string, o *object, c blob.Conditions) error {
	switch {
	case c.IfMatch != "" && c.IfNoneMatchAny:
		return fmt.Errorf("%s %q: both IfMatch and IfNoneMatchAny set: %w", op, name, blob.ErrInvalid)
	case c.IfNoneMatchAny && o != nil:
		return fmt.Errorf("%s %q: %w", op, name, blob.ErrExists)
	case c.IfMatch != "" && o == nil:
		return fmt.Errorf("%s %q: %w", op, name, blob.ErrNotFound)
	case c.IfMatch != "" && o.attrs.ETag != c.IfMatch:
		return fmt.Errorf("%s %q: have %s, want %s: %w", op, name, o.attrs.ETag, c.IfMatch, blob.ErrStale)
	}
	return nil
}

func cloneAttrs(a blob.Attrs) blob.Attrs {
	a.Metadata = maps.Clone(a.Metadata)
	a.ContentMD5 = bytes.Clone(a.ContentMD5)
	return a
}

func lowerKeys(md map[string]string) map[string]string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		out[strings.ToLower(k)] = v
	}
	return out
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Attrs, error) {
	if err := s.begin(ctx, "stat"); err != nil {
		defer s.mu.Unlock()
		return blob.Attrs{}, err
	}
	defer s.mu.Unlock()
	o, err := s.lookup("stat", name)
	if err != nil {
		return blob.Attrs{}, err
	}
	return cloneAttrs(o.attrs), nil
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context, opts blob.ListOptions) (blob.Page, error) {
	if err := s.begin(ctx, "list"); err != nil {
		defer s.mu.Unlock()
		return blob.Page{}, err
	}
	defer s.mu.Unlock()
	limit := opts.MaxResults
	if limit <= 0 || limit > blob.MaxListResults {
		limit = blob.MaxListResults
	}
	names := make([]string, 0, len(s.blobs))
	for n := range s.blobs {
		if strings.HasPrefix(n, opts.Prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var page blob.Page
	count := 0
	lastPrefix := ""
	for _, n := range names {
		if opts.Marker != "" && n <= opts.Marker {
			continue
		}
		entry, isPrefix := n, false
		if opts.Delimiter != "" {
			rest := n[len(opts.Prefix):]
			if i := strings.Index(rest, opts.Delimiter); i >= 0 {
				entry, isPrefix = opts.Prefix+rest[:i+len(opts.Delimiter)], true
			}
		}
		if isPrefix && entry == lastPrefix {
			continue
		}
		// The marker is the last name in the page, so a prefix that
		// spans pages must not be reported again: skip names under a
		// prefix that the marker already passed.
		if isPrefix && opts.Marker != "" && strings.HasPrefix(opts.Marker, entry) {
			continue
		}
		if count == limit {
			page.NextMarker = lastName(page, opts.Delimiter)
			break
		}
		count++
		if isPrefix {
			lastPrefix = entry
			page.Prefixes = append(page.Prefixes, entry)
			continue
		}
		a := cloneAttrs(s.blobs[n].attrs)
		if !opts.Metadata {
			a.Metadata = nil
		}
		page.Blobs = append(page.Blobs, a)
	}
	return page, nil
}

// lastName is the continuation marker: the greatest name covered by the page.
// For a prefix it is the prefix followed by the highest code point, so the
// next page resumes after every name under it.
func lastName(p blob.Page, delim string) string {
	var last string
	if n := len(p.Blobs); n > 0 {
		last = p.Blobs[n-1].Name
	}
	if n := len(p.Prefixes); n > 0 && p.Prefixes[n-1] > last {
		last = p.Prefixes[n-1] + string(rune(0x10FFFF))
	}
	return last
}

// ReadAt implements blob.Store.
func (s *Store) ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error) {
	if err := s.begin(ctx, "read"); err != nil {
		defer s.mu.Unlock()
		return 0, err
	}
	defer s.mu.Unlock()
	o, err := s.lookup("read", name)
	if err != nil {
		return 0, err
	}
	if etag != "" && o.attrs.ETag != etag {
		return 0, fmt.Errorf("read %q: have %s, pinned %s: %w", name, o.attrs.ETag, etag, blob.ErrStale)
	}
	if off < 0 {
		return 0, fmt.Errorf("read %q at negative offset %d: %w", name, off, blob.ErrInvalid)
	}
	if off >= int64(len(o.data)) {
		return 0, io.EOF
	}
	n := copy(p, o.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *Store) commit(name string, data []byte, blocks []committedBlock, opts blob.WriteOptions, md5sum []byte) blob.Attrs {
	o := &object{data: data, blocks: blocks}
	o.attrs = blob.Attrs{
		Name:         name,
		Size:         int64(len(data)),
		ETag:         s.nextETag(),
		LastModified: s.now().UTC().Truncate(time.Second),
		ContentMD5:   md5sum,
		Metadata:     lowerKeys(opts.Metadata),
	}
	s.blobs[name] = o
	delete(s.staged, name)
	return cloneAttrs(o.attrs)
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, name string, data []byte, opts blob.WriteOptions) (blob.Attrs, error) {
	if err := s.begin(ctx, "put"); err != nil {
		defer s.mu.Unlock()
		return blob.Attrs{}, err
	}
	defer s.mu.Unlock()
	if err := blob.ValidateName(name); err != nil {
		return blob.Attrs{}, fmt.Errorf("put: %w", err)
	}
	if err := checkConditions("put", name, s.blobs[name], opts.Conditions); err != nil {
		return blob.Attrs{}, err
	}
	sum := md5.Sum(data)
	data = bytes.Clone(data)
	var blocks []committedBlock
	if len(data) > 0 {
		// A Put blob has no block list; model it as one unnamed block so
		// Blocks reports its size, as the service does after a later commit.
		blocks = []committedBlock{{id: "", data: data}}
	}
	return s.commit(name, data, blocks, opts, sum[:]), nil
}

// StageBlock implements blob.Store.
func (s *Store) StageBlock(ctx context.Context, name, id string, data []byte) error {
	if err := s.begin(ctx, "stage block"); err != nil {
		defer s.mu.Unlock()
		return err
	}
	defer s.mu.Unlock()
	if err := blob.ValidateName(name); err != nil {
		return fmt.Errorf("stage block: %w", err)
	}
	if err := blob.ValidateBlockID(id); err != nil {
		return fmt.Errorf("stage block of %q: %w", name, err)
	}
	if len(data) > blob.MaxBlockSize {
		return fmt.Errorf("stage block of %q: %d bytes: %w", name, len(data), blob.ErrTooLarge)
	}
	m := s.staged[name]
	if m == nil {
		m = map[string][]byte{}
		s.staged[name] = m
	}
	for other := range m {
		if len(other) != len(id) {
			return fmt.Errorf("stage block of %q: id length %d differs from staged %d: %w", name, len(id), len(other), blob.ErrInvalid)
		}
		break
	}
	m[id] = bytes.Clone(data)
	return nil
}

// CommitBlocks implements blob.Store.
func (s *Store) CommitBlocks(ctx context.Context, name string, ids []string, opts blob.WriteOptions) (blob.Attrs, error) {
	if err := s.begin(ctx, "commit"); err != nil {
		defer s.mu.Unlock()
		return blob.Attrs{}, err
	}
	defer s.mu.Unlock()
	if len(ids) > blob.MaxBlockCount {
		return blob.Attrs{}, fmt.Errorf("commit %q: %d blocks: %w", name, len(ids), blob.ErrTooLarge)
	}
	old := s.blobs[name]
	if err := checkConditions("commit", name, old, opts.Conditions); err != nil {
		return blob.Attrs{}, err
	}
	staged := s.staged[name]
	var data []byte
	blocks := make([]committedBlock, 0, len(ids))
	for _, id := range ids {
		b, ok := staged[id]
		if !ok && old != nil {
			// The service lets a commit reuse committed blocks by id.
			if i := slices.IndexFunc(old.blocks, func(c committedBlock) bool { return c.id == id }); i >= 0 {
				b, ok = old.blocks[i].data, true
			}
		}
		if !ok {
			return blob.Attrs{}, fmt.Errorf("commit %q: block %q was never staged: %w", name, id, blob.ErrInvalid)
		}
		data = append(data, b...)
		blocks = append(blocks, committedBlock{id: id, data: b})
	}
	return s.commit(name, data, blocks, opts, bytes.Clone(opts.ContentMD5)), nil
}

// Blocks implements blob.Store.
func (s *Store) Blocks(ctx context.Context, name string) ([]blob.Block, error) {
	if err := s.begin(ctx, "block list"); err != nil {
		defer s.mu.Unlock()
		return nil, err
	}
	defer s.mu.Unlock()
	o, err := s.lookup("block list", name)
	if err != nil {
		return nil, err
	}
	out := make([]blob.Block, 0, len(o.blocks))
	for _, b := range o.blocks {
		if b.id == "" {
			continue // a Put blob has no committed block list
		}
		out = append(out, blob.Block{ID: b.id, Size: int64(len(b.data))})
	}
	return out, nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, name string, cond blob.Conditions) error {
	if err := s.begin(ctx, "delete"); err != nil {
		defer s.mu.Unlock()
		return err
	}
	defer s.mu.Unlock()
	o, err := s.lookup("delete", name)
	if err != nil {
		return err
	}
	if err := checkConditions("delete", name, o, cond); err != nil {
		return err
	}
	delete(s.blobs, name)
	delete(s.staged, name)
	return nil
}

// Copy implements blob.Store.
func (s *Store) Copy(ctx context.Context, src string, srcETag blob.ETag, dst string, opts blob.WriteOptions) (blob.Attrs, error) {
	if err := s.begin(ctx, "copy"); err != nil {
		defer s.mu.Unlock()
		return blob.Attrs{}, err
	}
	defer s.mu.Unlock()
	if err := blob.ValidateName(dst); err != nil {
		return blob.Attrs{}, fmt.Errorf("copy: %w", err)
	}
	o, err := s.lookup("copy", src)
	if err != nil {
		return blob.Attrs{}, err
	}
	if srcETag != "" && o.attrs.ETag != srcETag {
		return blob.Attrs{}, fmt.Errorf("copy %q: source has %s, pinned %s: %w", src, o.attrs.ETag, srcETag, blob.ErrStale)
	}
	if err := checkConditions("copy", dst, s.blobs[dst], opts.Conditions); err != nil {
		return blob.Attrs{}, err
	}
	md := opts.Metadata
	if md == nil {
		md = o.attrs.Metadata // Copy Blob keeps the source's metadata unless told otherwise.
	}
	copyOpts := opts
	copyOpts.Metadata = md
	return s.commit(dst, o.data, slices.Clone(o.blocks), copyOpts, bytes.Clone(o.attrs.ContentMD5)), nil
}

// SetMetadata implements blob.Store.
func (s *Store) SetMetadata(ctx context.Context, name string, md map[string]string, cond blob.Conditions) (blob.Attrs, error) {
	if err := s.begin(ctx, "set metadata"); err != nil {
		defer s.mu.Unlock()
		return blob.Attrs{}, err
	}
	defer s.mu.Unlock()
	o, err := s.lookup("set metadata", name)
	if err != nil {
		return blob.Attrs{}, err
	}
	if err := checkConditions("set metadata", name, o, cond); err != nil {
		return blob.Attrs{}, err
	}
	o.attrs.Metadata = lowerKeys(md)
	o.attrs.ETag = s.nextETag()
	o.attrs.LastModified = s.now().UTC().Truncate(time.Second)
	return cloneAttrs(o.attrs), nil
}
