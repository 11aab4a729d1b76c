package prefetch

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"sort"
)

// DirTree is a Tree over a local directory, typically a blobfs mount. It
// goes through an os.Root, so no name (or symlink) can reach outside the
// directory it was opened on.
type DirTree struct {
	root *os.Root
}

var _ Tree = (*DirTree)(nil)

// OpenDir returns a DirTree rooted at dir. Close it when done.
func OpenDir(dir string) (*DirTree, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("prefetch: open %s: %w", dir, err)
	}
	return &DirTree{root: r}, nil
}

// Close releases the directory.
func (d *DirTree) Close() error { return d.root.Close() }

func osName(name string) (string, error) {
	name, err := cleanName(name)
	if name == "" {
		return ".", err
	}
	return name, err
}

// ReadDir implements Tree. Symlinks are followed (Lightning's
// save_last="link" makes last.ckpt one); a dangling one is left out.
func (d *DirTree) ReadDir(ctx context.Context, dir string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name, err := osName(dir)
	if err != nil {
		return nil, err
	}
	f, err := d.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	des, err := f.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		var fi fs.FileInfo
		if de.Type()&fs.ModeSymlink != 0 {
			fi, err = d.root.Stat(join(dirOrEmpty(name), de.Name()))
			if err != nil {
				continue
			}
		} else if fi, err = de.Info(); err != nil {
			continue // removed since the listing
		}
		out = append(out, entryOf(de.Name(), fi))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func dirOrEmpty(name string) string {
	if name == "." {
		return ""
	}
	return name
}

// ReadAt implements Tree.
func (d *DirTree) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := osName(name)
	if err != nil {
		return 0, err
	}
	f, err := d.root.Open(n)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(p, off)
}

// Stat implements Tree.
func (d *DirTree) Stat(ctx context.Context, name string) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	n, err := osName(name)
	if err != nil {
		return Entry{}, err
	}
	fi, err := d.root.Stat(n)
	if err != nil {
		return Entry{}, err
	}
	return entryOf(fi.Name(), fi), nil
}

func entryOf(name string, fi fs.FileInfo) Entry {
	e := Entry{Name: name, IsDir: fi.IsDir(), ModTime: fi.ModTime()}
	if !e.IsDir {
		e.Size = fi.Size()
	}
	return e
}
