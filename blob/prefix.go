package blob

import (
	"context"
	"strings"
)

// WithPrefix returns a Store that sees only the names under prefix, with
// the prefix removed: mounting a "subdirectory" of a container (BlobFuse2's
// azstorage.subdirectory, a CSI volume that is a prefix of a container).
// An empty prefix returns s unchanged. prefix is normalised to end in "/".
func WithPrefix(s Store, prefix string) Store {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return s
	}
	return &prefixed{s: s, p: prefix + "/"}
}

type prefixed struct {
	s Store
	p string // ends in "/"
}

func (p *prefixed) full(name string) string { return p.p + name }

func (p *prefixed) strip(a Attrs) Attrs {
	a.Name = strings.TrimPrefix(a.Name, p.p)
	return a
}

func (p *prefixed) Stat(ctx context.Context, name string) (Attrs, error) {
	a, err := p.s.Stat(ctx, p.full(name))
	return p.strip(a), err
}

func (p *prefixed) List(ctx context.Context, opts ListOptions) (Page, error) {
	opts.Prefix = p.full(opts.Prefix)
	if opts.Marker != "" {
		opts.Marker = p.full(opts.Marker)
	}
	page, err := p.s.List(ctx, opts)
	if err != nil {
		return page, err
	}
	for i := range page.Blobs {
		page.Blobs[i] = p.strip(page.Blobs[i])
	}
	for i := range page.Prefixes {
		page.Prefixes[i] = strings.TrimPrefix(page.Prefixes[i], p.p)
	}
	page.NextMarker = strings.TrimPrefix(page.NextMarker, p.p)
	return page, nil
}

func (p *prefixed) ReadAt(ctx context.Context, name string, etag ETag, b []byte, off int64) (int, error) {
	return p.s.ReadAt(ctx, p.full(name), etag, b, off)
}

// ReadAtV implements VectorReader (through the wrapped store's, if any).
func (p *prefixed) ReadAtV(ctx context.Context, name string, etag ETag, bufs [][]byte, off int64) (int, error) {
	return ReadAtV(ctx, p.s, p.full(name), etag, bufs, off)
}

func (p *prefixed) Put(ctx context.Context, name string, data []byte, opts WriteOptions) (Attrs, error) {
	if err := ValidateName(name); err != nil {
		return Attrs{}, err
	}
	a, err := p.s.Put(ctx, p.full(name), data, opts)
	return p.strip(a), err
}

func (p *prefixed) StageBlock(ctx context.Context, name, id string, data []byte) error {
	return p.s.StageBlock(ctx, p.full(name), id, data)
}

func (p *prefixed) CommitBlocks(ctx context.Context, name string, ids []string, opts WriteOptions) (Attrs, error) {
	a, err := p.s.CommitBlocks(ctx, p.full(name), ids, opts)
	return p.strip(a), err
}

func (p *prefixed) Blocks(ctx context.Context, name string) ([]Block, error) {
	return p.s.Blocks(ctx, p.full(name))
}

func (p *prefixed) Delete(ctx context.Context, name string, cond Conditions) error {
	return p.s.Delete(ctx, p.full(name), cond)
}

func (p *prefixed) Copy(ctx context.Context, src string, srcETag ETag, dst string, opts WriteOptions) (Attrs, error) {
	if err := ValidateName(dst); err != nil {
		return Attrs{}, err
	}
	a, err := p.s.Copy(ctx, p.full(src), srcETag, p.full(dst), opts)
	return p.strip(a), err
}

func (p *prefixed) SetMetadata(ctx context.Context, name string, md map[string]string, cond Conditions) (Attrs, error) {
	a, err := p.s.SetMetadata(ctx, p.full(name), md, cond)
	return p.strip(a), err
}
