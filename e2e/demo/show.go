package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dustin/go-humanize"

	"github.com/blobfs/blobfs/blob"
)

// showTree prints the container like `tree`, walking it one directory at
// a time with delimiter listings, as a FUSE readdir will.
func showTree(ctx context.Context, s blob.Store, w io.Writer, title string) (files int, err error) {
	fmt.Fprintln(w, title)
	return walk(ctx, s, w, "", "")
}

// treeEntry is one line of the tree: a virtual directory (name ends in
// "/") or a blob.
type treeEntry struct {
	name  string
	dir   bool
	attrs blob.Attrs
}

func walk(ctx context.Context, s blob.Store, w io.Writer, prefix, indent string) (int, error) {
	var entries []treeEntry
	opts := blob.ListOptions{Prefix: prefix, Delimiter: "/", Metadata: true}
	for {
		page, err := s.List(ctx, opts)
		if err != nil {
			return 0, err
		}
		for _, p := range page.Prefixes {
			entries = append(entries, treeEntry{name: p, dir: true})
		}
		for _, b := range page.Blobs {
			if b.IsDirMarker() {
				// A marker names an (empty) directory; its children, if
				// any, come as a prefix of the same name.
				if !containsDir(entries, b.Name+"/") {
					entries = append(entries, treeEntry{name: b.Name + "/", dir: true})
				}
				continue
			}
			entries = append(entries, treeEntry{name: b.Name, attrs: b})
		}
		if page.NextMarker == "" {
			break
		}
		opts.Marker = page.NextMarker
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	files := 0
	for i, e := range entries {
		branch, next := "├── ", "│   "
		if i == len(entries)-1 {
			branch, next = "└── ", "    "
		}
		base := strings.TrimPrefix(e.name, prefix)
		if e.dir {
			fmt.Fprintf(w, "%s%s%s\n", indent, branch, base)
			n, err := walk(ctx, s, w, e.name, indent+next)
			if err != nil {
				return 0, err
			}
			files += n
			continue
		}
		files++
		line := indent + branch + base
		pad := max(1, 52-utf8.RuneCountInString(line))
		fmt.Fprintf(w, "%s%*s\n", line, pad+9, humanize.IBytes(uint64(e.attrs.Size)))
	}
	return files, nil
}

func containsDir(entries []treeEntry, name string) bool {
	for _, e := range entries {
		if e.dir && e.name == name {
			return true
		}
	}
	return false
}

// readChunk is how much one ReadAt asks for: the block size the cache is
// expected to use.
const readChunk = 8 << 20

// verifyStats summarizes a verification run.
type verifyStats struct {
	Files   int
	Bytes   int64
	Elapsed time.Duration
}

// verify reads every file back through the Store in readChunk pieces,
// pinned to the ETag Stat returned, and checks the bytes against what was
// seeded and against the blob's recorded Content-MD5.
func verify(ctx context.Context, s blob.Store, files []sampleFile) (verifyStats, error) {
	start := time.Now()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 4)
		st   verifyStats
	)
	for _, f := range files {
		if f.DirMarker {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			n, err := verifyFile(ctx, s, f)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			st.Files++
			st.Bytes += n
		})
	}
	wg.Wait()
	st.Elapsed = time.Since(start)
	return st, errors.Join(errs...)
}

func verifyFile(ctx context.Context, s blob.Store, f sampleFile) (int64, error) {
	a, err := s.Stat(ctx, f.Name)
	if err != nil {
		return 0, err
	}
	if a.Size != int64(len(f.Data)) {
		return 0, fmt.Errorf("%s: size %d, seeded %d", f.Name, a.Size, len(f.Data))
	}
	h := md5.New()
	buf := make([]byte, readChunk)
	var off int64
	for {
		n, err := s.ReadAt(ctx, f.Name, a.ETag, buf, off)
		if !bytes.Equal(buf[:n], f.Data[off:off+int64(n)]) {
			return 0, fmt.Errorf("%s: bytes at %d differ from what was seeded", f.Name, off)
		}
		h.Write(buf[:n])
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if off != a.Size {
		return 0, fmt.Errorf("%s: read %d bytes, size is %d", f.Name, off, a.Size)
	}
	if sum := h.Sum(nil); len(a.ContentMD5) > 0 && !bytes.Equal(sum, a.ContentMD5) {
		return 0, fmt.Errorf("%s: MD5 %x, blob records %x", f.Name, sum, a.ContentMD5)
	}
	return off, nil
}

// showSafetensors reads just the header of a safetensors checkpoint with
// two ranged reads, as checkpoint-aware prefetching will, and prints its
// tensors.
func showSafetensors(ctx context.Context, s blob.Store, w io.Writer, name string) error {
	var lenBuf [8]byte
	if _, err := s.ReadAt(ctx, name, "", lenBuf[:], 0); err != nil {
		return fmt.Errorf("%s: header length: %w", name, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > 100<<20 {
		return fmt.Errorf("%s: header of %d bytes is not plausible", name, n)
	}
	hdr := make([]byte, n)
	if _, err := s.ReadAt(ctx, name, "", hdr, 8); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: header: %w", name, err)
	}
	var tensors map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &tensors); err != nil {
		return fmt.Errorf("%s: header JSON: %w", name, err)
	}
	names := make([]string, 0, len(tensors))
	for k := range tensors {
		if k != "__metadata__" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	fmt.Fprintf(w, "%s: %d-byte header, %d tensors\n", name, n, len(names))
	for _, k := range names {
		var t struct {
			DType       string   `json:"dtype"`
			Shape       []int    `json:"shape"`
			DataOffsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(tensors[k], &t); err != nil {
			return fmt.Errorf("%s: tensor %s: %w", name, k, err)
		}
		fmt.Fprintf(w, "  %-24s %s %v at +%d\n", k, t.DType, t.Shape, 8+int64(n)+t.DataOffsets[0])
	}
	return nil
}
