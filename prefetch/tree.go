package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// Entry describes one file or directory of a Tree.
type Entry struct {
	// Name is the base name in ReadDir and Stat results, and the
	// slash-separated path from the tree root in Checkpoint.Files.
	Name    string
	IsDir   bool
	Size    int64
	ModTime time.Time
}

// Tree is the read-only view of a checkpoint location that discovery and
// planning need. Names are slash-separated paths relative to the tree's
// root without a leading slash; "" is the root itself. A missing name is an
// error wrapping fs.ErrNotExist. Methods must be safe for concurrent use:
// completeness checks read many small headers in parallel.
type Tree interface {
	// ReadDir lists a directory, sorted by name.
	ReadDir(ctx context.Context, dir string) ([]Entry, error)
	// ReadAt has io.ReaderAt semantics.
	ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error)
	// Stat describes one file or directory.
	Stat(ctx context.Context, name string) (Entry, error)
}

// cleanName normalises a caller-supplied path to the Tree convention and
// rejects ones that would leave the tree.
func cleanName(name string) (string, error) {
	name = strings.Trim(name, "/")
	if name == "" || name == "." {
		return "", nil
	}
	name = path.Clean(name)
	if !fs.ValidPath(name) {
		return "", fmt.Errorf("prefetch: path %q leaves the tree: %w", name, fs.ErrInvalid)
	}
	return name, nil
}

// join is path.Join without turning "" into ".".
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// readExact reads exactly n bytes at off.
func readExact(ctx context.Context, t Tree, name string, off, n int64) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("%s: negative read length %d: %w", name, n, ErrMalformed)
	}
	p := make([]byte, n)
	got, err := t.ReadAt(ctx, name, p, off)
	if got == len(p) {
		return p, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: short read at %d: %d of %d bytes: %w", name, off, got, n, ErrIncomplete)
	}
	return nil, fmt.Errorf("%s: read %d bytes at %d: %w", name, n, off, err)
}

// readSmall reads a whole file known to be size bytes, refusing files over
// limit: marker and index files are small, and a huge one is not what it
// claims to be.
func readSmall(ctx context.Context, t Tree, name string, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d a %s may have: %w", name, size, limit, path.Base(name), ErrMalformed)
	}
	return readExact(ctx, t, name, 0, size)
}

// maxWalkFiles bounds one checkpoint's listing; real checkpoints have at
// most tens of thousands of files (one or a few per rank).
const maxWalkFiles = 1 << 20

// walk lists every file under dir (recursively), Names relative to the tree
// root, sorted.
func walk(ctx context.Context, t Tree, dir string) ([]Entry, error) {
	var out []Entry
	var rec func(d string, depth int) error
	rec = func(d string, depth int) error {
		if depth > 32 {
			return fmt.Errorf("%s: directories nested deeper than 32: %w", d, ErrMalformed)
		}
		ents, err := t.ReadDir(ctx, d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p := join(d, e.Name)
			if e.IsDir {
				if err := rec(p, depth+1); err != nil {
					return err
				}
				continue
			}
			if len(out) >= maxWalkFiles {
				return fmt.Errorf("%s: more than %d files: %w", dir, maxWalkFiles, ErrMalformed)
			}
			e.Name = p
			out = append(out, e)
		}
		return nil
	}
	if err := rec(dir, 0); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// fileSet indexes a walk result by path.
type fileSet map[string]Entry

func newFileSet(files []Entry) fileSet {
	s := make(fileSet, len(files))
	for _, f := range files {
		s[f.Name] = f
	}
	return s
}

// under returns the files directly inside dir (not in subdirectories).
func under(files []Entry, dir string) []Entry {
	var out []Entry
	prefix := dir + "/"
	if dir == "" {
		prefix = ""
	}
	for _, f := range files {
		rest, ok := strings.CutPrefix(f.Name, prefix)
		if ok && !strings.Contains(rest, "/") {
			out = append(out, f)
		}
	}
	return out
}

// checkConcurrency bounds the small reads (headers, zip end records) that
// completeness checks issue; one GET to Blob costs ~10 ms, so checking a
// 1000-rank checkpoint one file at a time would take seconds.
const checkConcurrency = 8

// forEach runs fn for every index in [0, n) with bounded concurrency and
// returns the error of the lowest failing index, so that results do not
// depend on scheduling.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, n)
	sem := make(chan struct{}, checkConcurrency)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	// Prefer a real failure over the cancellations it caused.
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}
