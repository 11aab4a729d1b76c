package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/blobfs/blobfs/blob"
)

// StoreTree is a Tree over the blobs of a blob.Store under a prefix, with
// '/' as the directory separator — the same view the FUSE volume gives.
// Directories are virtual (listing prefixes) or directory-marker blobs
// (hdi_isfolder=true, as BlobFuse2 and the portal write them).
type StoreTree struct {
	store  blob.Store
	prefix string // "" or "a/b/"
}

var _ Tree = (*StoreTree)(nil)

// NewStoreTree returns a Tree whose root is prefix (a virtual directory,
// "" for the whole container).
func NewStoreTree(s blob.Store, prefix string) *StoreTree {
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &StoreTree{store: s, prefix: prefix}
}

// blobName maps a Tree name to a blob name; the root maps to the prefix
// itself (with its trailing slash, or "").
func (t *StoreTree) blobName(name string) (full string, root bool, err error) {
	name, err = cleanName(name)
	if err != nil {
		return "", false, err
	}
	return t.prefix + name, name == "", nil
}

// ReadDir implements Tree, reading every page of a '/'-delimited listing.
// A directory with no blobs under it and no marker does not exist.
func (t *StoreTree) ReadDir(ctx context.Context, dir string) ([]Entry, error) {
	full, root, err := t.blobName(dir)
	if err != nil {
		return nil, err
	}
	listPrefix := full
	if !root {
		listPrefix += "/"
	}
	dirs := map[string]bool{}
	var out []Entry
	marker := ""
	for {
		page, err := t.store.List(ctx, blob.ListOptions{Prefix: listPrefix, Delimiter: "/", Marker: marker, Metadata: true})
		if err != nil {
			return nil, fmt.Errorf("prefetch: list %q: %w", listPrefix, err)
		}
		for _, p := range page.Prefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(p, listPrefix), "/")
			if name != "" && !dirs[name] {
				dirs[name] = true
				out = append(out, Entry{Name: name, IsDir: true})
			}
		}
		for _, b := range page.Blobs {
			name := strings.TrimPrefix(b.Name, listPrefix)
			if name == "" { // a "dir/" placeholder blob
				continue
			}
			if b.IsDirMarker() {
				if !dirs[name] {
					dirs[name] = true
					out = append(out, Entry{Name: name, IsDir: true, ModTime: b.LastModified})
				}
				continue
			}
			out = append(out, Entry{Name: name, Size: b.Size, ModTime: b.LastModified})
		}
		if page.NextMarker == "" {
			break
		}
		marker = page.NextMarker
	}
	// A marker and a prefix of the same name are one directory; a file and a
	// directory of the same name can coexist in Blob and both are kept.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) == 0 && !root {
		if a, err := t.store.Stat(ctx, full); err != nil || !a.IsDirMarker() {
			return nil, fmt.Errorf("prefetch: directory %q: %w", dir, fs.ErrNotExist)
		}
	}
	return out, nil
}

// ReadAt implements Tree. Reads are not pinned to an ETag: a plan is a hint,
// and the cache fill that follows pins its own reads.
func (t *StoreTree) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	full, _, err := t.blobName(name)
	if err != nil {
		return 0, err
	}
	return t.store.ReadAt(ctx, full, "", p, off)
}

// Stat implements Tree.
func (t *StoreTree) Stat(ctx context.Context, name string) (Entry, error) {
	full, root, err := t.blobName(name)
	if err != nil {
		return Entry{}, err
	}
	if root {
		return Entry{IsDir: true}, nil
	}
	base := full[strings.LastIndex(full, "/")+1:]
	a, err := t.store.Stat(ctx, full)
	switch {
	case err == nil && !a.IsDirMarker():
		return Entry{Name: base, Size: a.Size, ModTime: a.LastModified}, nil
	case err == nil:
		return Entry{Name: base, IsDir: true, ModTime: a.LastModified}, nil
	case !errors.Is(err, blob.ErrNotFound):
		return Entry{}, fmt.Errorf("prefetch: stat %q: %w", full, err)
	}
	page, lerr := t.store.List(ctx, blob.ListOptions{Prefix: full + "/", Delimiter: "/", MaxResults: 1})
	if lerr != nil {
		return Entry{}, fmt.Errorf("prefetch: stat %q: %w", full, lerr)
	}
	if len(page.Blobs) > 0 || len(page.Prefixes) > 0 {
		return Entry{Name: base, IsDir: true}, nil
	}
	return Entry{}, fmt.Errorf("prefetch: stat %q: %w", full, err)
}
