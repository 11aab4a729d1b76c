package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/blobfs/blobfs/blob"
)

// File is one version of one blob to prefetch.
type File struct {
	// Name is the blob's name in the store (a path from the mount's root).
	Name string
	ETag blob.ETag
	Size int64
}

// Node is a name Names knows: a directory, or a file with its version.
type Node struct {
	// Name is the path from the root ("" is the root).
	Name string
	Dir  bool
	// File describes a file (Name repeated); empty ETag for a file
	// without a committed version (being written), which is skipped.
	File File
}

// Names is the namespace paths are resolved in. The mount resolves
// through its own volume, so a prefetch sees the versions (and caches the
// keys) its reads will use; the standalone prefetch through the store
// (StoreNames).
type Names interface {
	// Stat describes name; a missing name is an error wrapping
	// fs.ErrNotExist.
	Stat(ctx context.Context, name string) (Node, error)
	// ReadDir lists one directory level, Names being full paths.
	ReadDir(ctx context.Context, dir string) ([]Node, error)
}

// Resolve turns paths into files, in the order given: a file is itself,
// a directory is every file below it (in name order), a glob (path.Match
// syntax, matched one segment at a time) is what it matches, each match
// treated the same way. A file named twice is returned once, at its first
// place. Paths that match nothing are returned in missing (their errors
// wrap fs.ErrNotExist); other failures end the walk.
func Resolve(ctx context.Context, n Names, paths []string) (files []File, missing []error, err error) {
	seen := map[string]bool{}
	for _, p := range paths {
		p = strings.Trim(p, "/")
		var got []File
		var err error
		if hasMeta(p) {
			got, err = glob(ctx, n, p)
			if err == nil && len(got) == 0 {
				err = fmt.Errorf("%s: no match: %w", displayPath(p), fs.ErrNotExist)
			}
		} else {
			got, err = expand(ctx, n, p)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, err)
			continue
		case err != nil:
			return files, missing, err
		}
		for _, f := range got {
			if !seen[f.Name] {
				seen[f.Name] = true
				files = append(files, f)
			}
		}
	}
	return files, missing, nil
}

func displayPath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// hasMeta reports whether p has glob syntax.
func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// expand resolves a literal path: a file, or every file under a directory.
func expand(ctx context.Context, n Names, p string) ([]File, error) {
	node, err := n.Stat(ctx, p)
	if err != nil {
		return nil, err
	}
	if !node.Dir {
		if node.File.ETag == "" {
			return nil, nil
		}
		return []File{node.File}, nil
	}
	return walkFiles(ctx, n, p)
}

// walkFiles lists every file under dir, depth first in name order.
func walkFiles(ctx context.Context, n Names, dir string) ([]File, error) {
	ents, err := n.ReadDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	var out []File
	for _, e := range ents {
		if e.Dir {
			sub, err := walkFiles(ctx, n, e.Name)
			if err != nil && !errors.Is(err, fs.ErrNotExist) { // gone meanwhile
				return nil, err
			}
			out = append(out, sub...)
		} else if e.File.ETag != "" {
			out = append(out, e.File)
		}
	}
	return out, nil
}

// glob expands a pattern one segment at a time, so only the directories
// the pattern can reach are listed.
func glob(ctx context.Context, n Names, pattern string) ([]File, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	segs := strings.Split(pattern, "/")
	level := []Node{{Name: "", Dir: true}}
	for _, seg := range segs {
		var next []Node
		for _, d := range level {
			if !d.Dir {
				continue
			}
			if !hasMeta(seg) {
				node, err := n.Stat(ctx, join(d.Name, seg))
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					return nil, err
				}
				next = append(next, node)
				continue
			}
			ents, err := n.ReadDir(ctx, d.Name)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			for _, e := range ents {
				if ok, _ := path.Match(seg, path.Base(e.Name)); ok {
					next = append(next, e)
				}
			}
		}
		level = next
	}
	sort.Slice(level, func(i, j int) bool { return level[i].Name < level[j].Name })
	var out []File
	for _, node := range level {
		if !node.Dir {
			if node.File.ETag != "" {
				out = append(out, node.File)
			}
			continue
		}
		files, err := walkFiles(ctx, n, node.Name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		out = append(out, files...)
	}
	return out, nil
}

// StoreNames resolves names directly in a store, with '/' as the
// directory separator and hdi_isfolder markers as directories, as the
// mount shows them.
type StoreNames struct{ Store blob.Store }

var _ Names = StoreNames{}

// Stat implements Names.
func (s StoreNames) Stat(ctx context.Context, name string) (Node, error) {
	if name == "" {
		return Node{Dir: true}, nil
	}
	a, err := s.Store.Stat(ctx, name)
	switch {
	case err == nil && !a.IsDirMarker():
		return Node{Name: name, File: File{Name: name, ETag: a.ETag, Size: a.Size}}, nil
	case err == nil:
		return Node{Name: name, Dir: true}, nil
	case !errors.Is(err, blob.ErrNotFound):
		return Node{}, fmt.Errorf("stat %s: %w", name, err)
	}
	page, err := s.Store.List(ctx, blob.ListOptions{Prefix: name + "/", MaxResults: 1})
	if err != nil {
		return Node{}, fmt.Errorf("list %s: %w", name, err)
	}
	if len(page.Blobs) == 0 && len(page.Prefixes) == 0 {
		return Node{}, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	return Node{Name: name, Dir: true}, nil
}

// ReadDir implements Names.
func (s StoreNames) ReadDir(ctx context.Context, dir string) ([]Node, error) {
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	seen := map[string]bool{}
	var out []Node
	marker := ""
	for {
		page, err := s.Store.List(ctx, blob.ListOptions{Prefix: prefix, Delimiter: "/", Marker: marker, Metadata: true})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", displayPath(dir), err)
		}
		for _, p := range page.Prefixes {
			n := strings.TrimSuffix(strings.TrimPrefix(p, prefix), "/")
			if n != "" && !seen[n] && reachable(n) {
				seen[n] = true
				out = append(out, Node{Name: prefix + n, Dir: true})
			}
		}
		for _, b := range page.Blobs {
			n := strings.TrimPrefix(b.Name, prefix)
			if n == "" || !reachable(n) {
				continue
			}
			if b.IsDirMarker() {
				if !seen[n] {
					seen[n] = true
					out = append(out, Node{Name: b.Name, Dir: true})
				}
				continue
			}
			out = append(out, Node{Name: b.Name, File: File{Name: b.Name, ETag: b.ETag, Size: b.Size}})
		}
		if page.NextMarker == "" {
			break
		}
		marker = page.NextMarker
	}
	return out, nil
}

// reachable reports whether a name is a path the mount shows (no empty,
// "." or ".." segments).
func reachable(name string) bool {
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
