// Package blobtest is the conformance suite every blob.Store must pass. It
// runs against the in-memory store in unit tests and against the azstore
// adapter on Azurite, so the fake cannot drift from the real service.
package blobtest

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// Fixture is what a store under test provides for one subtest.
type Fixture struct {
	// Store is bound to a fresh, empty, existing container.
	Store blob.Store
	// Missing is bound to a container that does not exist.
	Missing blob.Store
	// InjectThrottle makes the next n request attempts answer HTTP 503.
	// Nil skips the throttling tests.
	InjectThrottle func(n int)
	// MaxRetries is how many retries the store makes after a 503.
	MaxRetries int
}

// Run runs the suite. newFixture is called once per subtest.
func Run(t *testing.T, newFixture func(t *testing.T) Fixture) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f Fixture)
	}{
		{"StatMissing", testStatMissing},
		{"PutStatRead", testPutStatRead},
		{"ReadPinnedToETag", testReadPinned},
		{"ReadIntoSeveralBuffers", testReadAtV},
		{"EmptyBlob", testEmptyBlob},
		{"Metadata", testMetadata},
		{"ListDelimiter", testListDelimiter},
		{"ListPagedSmall", testListPagedSmall},
		{"ListPastServiceLimit", testListPastServiceLimit},
		{"StageAndCommit", testStageAndCommit},
		{"CommitReusesCommittedBlocks", testCommitReuse},
		{"InvalidBlocks", testInvalidBlocks},
		{"ConditionalWrites", testConditionalWrites},
		{"RacingCommits", testRacingCommits},
		{"Delete", testDelete},
		{"Copy", testCopy},
		{"Names", testNames},
		{"MissingContainer", testMissingContainer},
		{"Throttling", testThrottling},
		{"CancelledContext", testCancelled},
		{"ETagSpelledOnce", testETagSpelledOnce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newFixture(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustPut(t *testing.T, s blob.Store, name string, data []byte) blob.Attrs {
	t.Helper()
	a, err := s.Put(ctxT(t), name, data, blob.WriteOptions{})
	if err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
	return a
}

func readAll(t *testing.T, s blob.Store, name string, etag blob.ETag, size int) []byte {
	t.Helper()
	p := make([]byte, size+1)
	n, err := s.ReadAt(ctxT(t), name, etag, p, 0)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt(%q) past the end: err = %v, want io.EOF", name, err)
	}
	return p[:n]
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want errors.Is(err, %v)", what, err, want)
	}
}

func testStatMissing(t *testing.T, f Fixture) {
	_, err := f.Store.Stat(ctxT(t), "no/such/blob")
	wantErr(t, "Stat missing", err, blob.ErrNotFound)
	wantErr(t, "Stat missing", err, fs.ErrNotExist)
	if errors.Is(err, blob.ErrContainerNotFound) {
		t.Fatalf("Stat missing blob reported a missing container: %v", err)
	}
	_, err = f.Store.ReadAt(ctxT(t), "no/such/blob", "", make([]byte, 10), 0)
	wantErr(t, "ReadAt missing", err, blob.ErrNotFound)
	_, err = f.Store.Blocks(ctxT(t), "no/such/blob")
	wantErr(t, "Blocks missing", err, blob.ErrNotFound)
}

func testPutStatRead(t *testing.T, f Fixture) {
	data := randBytes(1, 3<<20+17)
	before := time.Now().Add(-5 * time.Second)
	a := mustPut(t, f.Store, "dir/file.bin", data)
	after := time.Now().Add(5 * time.Second)
	if a.ETag == "" || a.Size != int64(len(data)) || a.Name != "dir/file.bin" {
		t.Fatalf("Put attrs = %+v, want name, size %d and an ETag", a, len(data))
	}
	st, err := f.Store.Stat(ctxT(t), "dir/file.bin")
	if err != nil {
		t.Fatal(err)
	}
	if st.ETag != a.ETag || st.Size != a.Size {
		t.Fatalf("Stat = %+v, Put returned %+v", st, a)
	}
	if st.LastModified.Before(before) || st.LastModified.After(after) {
		t.Fatalf("LastModified %v not within [%v, %v]", st.LastModified, before, after)
	}
	sum := md5.Sum(data)
	if !bytes.Equal(st.ContentMD5, sum[:]) {
		t.Fatalf("ContentMD5 = %x, want %x", st.ContentMD5, sum)
	}
	if got := readAll(t, f.Store, "dir/file.bin", "", len(data)); !bytes.Equal(got, data) {
		t.Fatalf("whole read differs (got %d bytes)", len(got))
	}
	// Ranged reads: middle, unaligned, tail, at and past the end.
	for _, r := range []struct{ off, n int }{{0, 1}, {1 << 20, 4096}, {12345, 1<<20 + 3}, {len(data) - 10, 10}} {
		p := make([]byte, r.n)
		n, err := f.Store.ReadAt(ctxT(t), "dir/file.bin", a.ETag, p, int64(r.off))
		if err != nil || n != r.n {
			t.Fatalf("ReadAt(off %d, len %d) = %d, %v", r.off, r.n, n, err)
		}
		if !bytes.Equal(p, data[r.off:r.off+r.n]) {
			t.Fatalf("ReadAt(off %d, len %d): wrong bytes", r.off, r.n)
		}
	}
	p := make([]byte, 100)
	n, err := f.Store.ReadAt(ctxT(t), "dir/file.bin", "", p, int64(len(data)-40))
	if n != 40 || !errors.Is(err, io.EOF) || !bytes.Equal(p[:n], data[len(data)-40:]) {
		t.Fatalf("short tail read = %d, %v; want 40, io.EOF", n, err)
	}
	n, err = f.Store.ReadAt(ctxT(t), "dir/file.bin", "", p, int64(len(data)))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read at EOF = %d, %v; want 0, io.EOF", n, err)
	}
	n, err = f.Store.ReadAt(ctxT(t), "dir/file.bin", "", p, int64(len(data)+1000))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read past EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func testReadPinned(t *testing.T, f Fixture) {
	v1 := mustPut(t, f.Store, "pinned", []byte("version one"))
	v2 := mustPut(t, f.Store, "pinned", []byte("version two!"))
	if v1.ETag == v2.ETag {
		t.Fatalf("overwrite kept ETag %s", v1.ETag)
	}
	p := make([]byte, 5)
	n, err := f.Store.ReadAt(ctxT(t), "pinned", v1.ETag, p, 0)
	wantErr(t, "ReadAt pinned to the old ETag", err, blob.ErrStale)
	if n != 0 {
		t.Fatalf("stale read returned %d bytes of the new version", n)
	}
	if _, err := f.Store.ReadAt(ctxT(t), "pinned", v2.ETag, p, 8); !errors.Is(err, io.EOF) || string(p[:4]) != "two!" {
		t.Fatalf("read pinned to the current ETag = %q, %v", p[:4], err)
	}
}

// ReadAtV (the store's VectorReader, or the copying fallback) fills the
// buffers in order as one ReadAt would, pinned like ReadAt, short only at
// the blob's end.
func testReadAtV(t *testing.T, f Fixture) {
	data := randBytes(17, 3<<20+100)
	a := mustPut(t, f.Store, "vector", data)
	bufs := [][]byte{make([]byte, 1<<20), make([]byte, 7), make([]byte, 2<<20)}
	n, err := blob.ReadAtV(ctxT(t), f.Store, "vector", a.ETag, bufs, 3)
	if err != nil || n != 3<<20+7 {
		t.Fatalf("ReadAtV of 3 MiB+7 at 3 = %d, %v", n, err)
	}
	if got := bytes.Join(bufs, nil); !bytes.Equal(got, data[3:3+n]) {
		t.Fatalf("ReadAtV put the wrong bytes in the buffers (first difference at %d)", firstDiff(got, data[3:]))
	}
	// Past the end: what exists, then io.EOF.
	bufs = [][]byte{make([]byte, 4), make([]byte, 8)}
	n, err = blob.ReadAtV(ctxT(t), f.Store, "vector", a.ETag, bufs, int64(len(data)-6))
	if !errors.Is(err, io.EOF) || n != 6 || !bytes.Equal(append(bufs[0][:4:4], bufs[1][:2]...), data[len(data)-6:]) {
		t.Fatalf("ReadAtV across the end = %d, %v, want the last 6 bytes and io.EOF", n, err)
	}
	b := mustPut(t, f.Store, "vector", []byte("changed"))
	if b.ETag == a.ETag {
		t.Fatalf("overwrite kept ETag %s", a.ETag)
	}
	_, err = blob.ReadAtV(ctxT(t), f.Store, "vector", a.ETag, [][]byte{make([]byte, 3)}, 0)
	wantErr(t, "ReadAtV pinned to the old ETag", err, blob.ErrStale)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func testEmptyBlob(t *testing.T, f Fixture) {
	a := mustPut(t, f.Store, "empty", nil)
	if a.Size != 0 {
		t.Fatalf("size = %d", a.Size)
	}
	n, err := f.Store.ReadAt(ctxT(t), "empty", a.ETag, make([]byte, 8), 0)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read of empty blob = %d, %v; want 0, io.EOF", n, err)
	}
	n, err = f.Store.ReadAt(ctxT(t), "empty", "", nil, 0)
	if n != 0 || (err != nil && !errors.Is(err, io.EOF)) {
		t.Fatalf("zero-length read = %d, %v", n, err)
	}
}

func testMetadata(t *testing.T, f Fixture) {
	a, err := f.Store.Put(ctxT(t), "marked", nil, blob.WriteOptions{Metadata: map[string]string{blob.MetaIsFolder: "true"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Store.Stat(ctxT(t), "marked")
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsDirMarker() {
		t.Fatalf("metadata %v: not a directory marker", st.Metadata)
	}
	b, err := f.Store.SetMetadata(ctxT(t), "marked", map[string]string{"owner": "ray"}, blob.Conditions{IfMatch: a.ETag})
	if err != nil {
		t.Fatal(err)
	}
	if b.ETag == a.ETag {
		t.Fatal("SetMetadata kept the ETag")
	}
	st, err = f.Store.Stat(ctxT(t), "marked")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(st.Metadata, map[string]string{"owner": "ray"}) {
		t.Fatalf("metadata after SetMetadata = %v", st.Metadata)
	}
	_, err = f.Store.SetMetadata(ctxT(t), "marked", nil, blob.Conditions{IfMatch: a.ETag})
	wantErr(t, "SetMetadata with stale ETag", err, blob.ErrStale)
	_, err = f.Store.SetMetadata(ctxT(t), "nope", nil, blob.Conditions{})
	wantErr(t, "SetMetadata on missing blob", err, blob.ErrNotFound)

	page, err := f.Store.List(ctxT(t), blob.ListOptions{Metadata: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Blobs) != 1 || page.Blobs[0].Metadata["owner"] != "ray" {
		t.Fatalf("List with metadata = %+v", page.Blobs)
	}
}

func putMany(t *testing.T, s blob.Store, names []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	sem := make(chan struct{}, 16)
	for _, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.Put(ctxT(t), n, []byte(n), blob.WriteOptions{}); err != nil {
				errs <- fmt.Errorf("put %q: %w", n, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func names(p blob.Page) []string {
	var out []string
	for _, b := range p.Blobs {
		out = append(out, b.Name)
	}
	return out
}

func testListDelimiter(t *testing.T, f Fixture) {
	putMany(t, f.Store, []string{"a.txt", "d/1", "d/2", "d/sub/3", "d2/x", "e/f/g"})
	p, err := f.Store.List(ctxT(t), blob.ListOptions{Delimiter: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(p), []string{"a.txt"}; !slices.Equal(got, want) {
		t.Fatalf("root blobs = %v, want %v", got, want)
	}
	if want := []string{"d/", "d2/", "e/"}; !slices.Equal(p.Prefixes, want) {
		t.Fatalf("root prefixes = %v, want %v", p.Prefixes, want)
	}
	if p.NextMarker != "" {
		t.Fatalf("NextMarker = %q on a single page", p.NextMarker)
	}
	p, err = f.Store.List(ctxT(t), blob.ListOptions{Prefix: "d/", Delimiter: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(p), []string{"d/1", "d/2"}; !slices.Equal(got, want) || !slices.Equal(p.Prefixes, []string{"d/sub/"}) {
		t.Fatalf("d/ = %v %v", got, p.Prefixes)
	}
	p, err = f.Store.List(ctxT(t), blob.ListOptions{Prefix: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(p), []string{"d/1", "d/2", "d/sub/3", "d2/x"}; !slices.Equal(got, want) || len(p.Prefixes) != 0 {
		t.Fatalf("flat d = %v %v", got, p.Prefixes)
	}
	p, err = f.Store.List(ctxT(t), blob.ListOptions{Prefix: "zzz/", Delimiter: "/"})
	if err != nil || len(p.Blobs)+len(p.Prefixes) != 0 {
		t.Fatalf("empty prefix = %+v, %v", p, err)
	}
}

// listAll pages through a listing and returns every blob name and prefix.
func listAll(t *testing.T, s blob.Store, opts blob.ListOptions) (blobs, prefixes []string, pages int) {
	t.Helper()
	for {
		p, err := s.List(ctxT(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		blobs = append(blobs, names(p)...)
		prefixes = append(prefixes, p.Prefixes...)
		if opts.MaxResults > 0 && len(p.Blobs)+len(p.Prefixes) > opts.MaxResults {
			t.Fatalf("page of %d entries exceeds MaxResults %d", len(p.Blobs)+len(p.Prefixes), opts.MaxResults)
		}
		if p.NextMarker == "" {
			return blobs, prefixes, pages
		}
		if pages > 100000 {
			t.Fatal("listing does not end")
		}
		opts.Marker = p.NextMarker
	}
}

func testListPagedSmall(t *testing.T, f Fixture) {
	var all []string
	for i := range 7 {
		all = append(all, fmt.Sprintf("f%02d", i))
		// Directories with several children each, so a prefix can span
		// a page boundary and must still be reported once.
		for j := range 3 {
			all = append(all, fmt.Sprintf("g%02d/c%d", i, j))
		}
	}
	putMany(t, f.Store, all)
	for _, size := range []int{1, 2, 3, 5} {
		blobs, prefixes, _ := listAll(t, f.Store, blob.ListOptions{Delimiter: "/", MaxResults: size})
		var wantBlobs, wantPrefixes []string
		for i := range 7 {
			wantBlobs = append(wantBlobs, fmt.Sprintf("f%02d", i))
			wantPrefixes = append(wantPrefixes, fmt.Sprintf("g%02d/", i))
		}
		if !slices.Equal(blobs, wantBlobs) || !slices.Equal(prefixes, wantPrefixes) {
			t.Fatalf("page size %d: blobs %v prefixes %v", size, blobs, prefixes)
		}
		flat, _, _ := listAll(t, f.Store, blob.ListOptions{MaxResults: size})
		want := slices.Clone(all)
		sort.Strings(want)
		if !slices.Equal(flat, want) {
			t.Fatalf("flat page size %d: got %d names, want %d", size, len(flat), len(want))
		}
	}
}

func testListPastServiceLimit(t *testing.T, f Fixture) {
	const n = blob.MaxListResults + 37
	all := make([]string, n)
	for i := range all {
		all[i] = fmt.Sprintf("many/%05d", i)
	}
	putMany(t, f.Store, all)
	first, err := f.Store.List(ctxT(t), blob.ListOptions{Prefix: "many/"})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Blobs) != blob.MaxListResults || first.NextMarker == "" {
		t.Fatalf("first page: %d blobs, marker %q; want %d and a marker", len(first.Blobs), first.NextMarker, blob.MaxListResults)
	}
	got, _, pages := listAll(t, f.Store, blob.ListOptions{Prefix: "many/", Delimiter: "/"})
	if pages != 2 || !slices.Equal(got, all) {
		t.Fatalf("paged listing: %d names in %d pages, want %d in 2", len(got), pages, n)
	}
}

func testStageAndCommit(t *testing.T, f Fixture) {
	var session [16]byte
	copy(session[:], "stage-and-commit")
	parts := [][]byte{randBytes(2, 1<<20), randBytes(3, 1<<20), randBytes(4, 12345)}
	ids := make([]string, len(parts))
	// Stage out of order, concurrently, as the upload path does.
	var wg sync.WaitGroup
	errs := make([]error, len(parts))
	for i := len(parts) - 1; i >= 0; i-- {
		ids[i] = blob.BlockID(session, uint64(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Store.StageBlock(ctxT(t), "ckpt/model.bin", ids[i], parts[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	_, err := f.Store.Stat(ctxT(t), "ckpt/model.bin")
	wantErr(t, "Stat before commit (staged blocks must be invisible)", err, blob.ErrNotFound)

	whole := bytes.Join(parts, nil)
	sum := md5.Sum(whole)
	a, err := f.Store.CommitBlocks(ctxT(t), "ckpt/model.bin", ids, blob.WriteOptions{
		Conditions: blob.Conditions{IfNoneMatchAny: true},
		ContentMD5: sum[:],
		Metadata:   map[string]string{"step": "100"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != int64(len(whole)) || a.ETag == "" {
		t.Fatalf("commit attrs = %+v", a)
	}
	st, err := f.Store.Stat(ctxT(t), "ckpt/model.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.ContentMD5, sum[:]) || st.Metadata["step"] != "100" {
		t.Fatalf("after commit: md5 %x metadata %v", st.ContentMD5, st.Metadata)
	}
	if got := readAll(t, f.Store, "ckpt/model.bin", a.ETag, len(whole)); !bytes.Equal(got, whole) {
		t.Fatal("committed content differs")
	}
	blocks, err := f.Store.Blocks(ctxT(t), "ckpt/model.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 3 || blocks[0].ID != ids[0] || blocks[2].Size != 12345 {
		t.Fatalf("Blocks = %+v", blocks)
	}
}

func testCommitReuse(t *testing.T, f Fixture) {
	var s1, s2 [16]byte
	copy(s1[:], "first-session...")
	copy(s2[:], "second-session..")
	a, b, c := randBytes(5, 4096), randBytes(6, 4096), randBytes(7, 100)
	idA, idB := blob.BlockID(s1, 0), blob.BlockID(s1, 1)
	for id, d := range map[string][]byte{idA: a, idB: b} {
		if err := f.Store.StageBlock(ctxT(t), "patched", id, d); err != nil {
			t.Fatal(err)
		}
	}
	v1, err := f.Store.CommitBlocks(ctxT(t), "patched", []string{idA, idB}, blob.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Replace the second block, keep the first by id: a random write
	// patches the block list instead of re-uploading the file.
	idC := blob.BlockID(s2, 1)
	if err := f.Store.StageBlock(ctxT(t), "patched", idC, c); err != nil {
		t.Fatal(err)
	}
	v2, err := f.Store.CommitBlocks(ctxT(t), "patched", []string{idA, idC}, blob.WriteOptions{Conditions: blob.Conditions{IfMatch: v1.ETag}})
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(a), c...)
	if got := readAll(t, f.Store, "patched", v2.ETag, len(want)); !bytes.Equal(got, want) {
		t.Fatal("patched content differs")
	}
	blocks, err := f.Store.Blocks(ctxT(t), "patched")
	if err != nil || len(blocks) != 2 || blocks[1].ID != idC || blocks[1].Size != 100 {
		t.Fatalf("Blocks = %+v, %v", blocks, err)
	}
}

func testInvalidBlocks(t *testing.T, f Fixture) {
	err := f.Store.StageBlock(ctxT(t), "bad", "not base64!", []byte("x"))
	wantErr(t, "StageBlock with a non-base64 id", err, blob.ErrInvalid)
	var s [16]byte
	_, err = f.Store.CommitBlocks(ctxT(t), "bad", []string{blob.BlockID(s, 9)}, blob.WriteOptions{})
	wantErr(t, "commit of a never-staged block", err, blob.ErrInvalid)
	_, err = f.Store.Stat(ctxT(t), "bad")
	wantErr(t, "failed commit created the blob", err, blob.ErrNotFound)
}

func testConditionalWrites(t *testing.T, f Fixture) {
	v1 := mustPut(t, f.Store, "cond", []byte("one"))
	_, err := f.Store.Put(ctxT(t), "cond", []byte("x"), blob.WriteOptions{Conditions: blob.Conditions{IfNoneMatchAny: true}})
	wantErr(t, "Put IfNoneMatchAny on an existing blob", err, blob.ErrExists)
	v2, err := f.Store.Put(ctxT(t), "cond", []byte("two"), blob.WriteOptions{Conditions: blob.Conditions{IfMatch: v1.ETag}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Store.Put(ctxT(t), "cond", []byte("three"), blob.WriteOptions{Conditions: blob.Conditions{IfMatch: v1.ETag}})
	wantErr(t, "Put IfMatch with a stale ETag", err, blob.ErrStale)

	var s [16]byte
	id := blob.BlockID(s, 0)
	if err := f.Store.StageBlock(ctxT(t), "cond", id, []byte("staged")); err != nil {
		t.Fatal(err)
	}
	_, err = f.Store.CommitBlocks(ctxT(t), "cond", []string{id}, blob.WriteOptions{Conditions: blob.Conditions{IfMatch: v1.ETag}})
	wantErr(t, "CommitBlocks IfMatch with a stale ETag (412)", err, blob.ErrStale)
	_, err = f.Store.CommitBlocks(ctxT(t), "cond", []string{id}, blob.WriteOptions{Conditions: blob.Conditions{IfNoneMatchAny: true}})
	wantErr(t, "CommitBlocks IfNoneMatchAny on an existing blob", err, blob.ErrExists)
	if got := readAll(t, f.Store, "cond", v2.ETag, 3); string(got) != "two" {
		t.Fatalf("after failed conditional writes content = %q, want %q", got, "two")
	}
	_, err = f.Store.Put(ctxT(t), "fresh", []byte("x"), blob.WriteOptions{Conditions: blob.Conditions{IfMatch: v1.ETag}})
	if !errors.Is(err, blob.ErrNotFound) && !errors.Is(err, blob.ErrStale) {
		t.Fatalf("Put IfMatch on a missing blob: err = %v, want ErrNotFound or ErrStale", err)
	}
}

// testRacingCommits is two writers on two mounts saving the same file: both
// base their commit on the same ETag; exactly one wins.
func testRacingCommits(t *testing.T, f Fixture) {
	base := mustPut(t, f.Store, "race", []byte("base"))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s [16]byte
			s[0] = byte(w + 1)
			id := blob.BlockID(s, 0)
			if err := f.Store.StageBlock(ctxT(t), "race", id, []byte(fmt.Sprintf("writer %d", w))); err != nil {
				errs[w] = err
				return
			}
			_, errs[w] = f.Store.CommitBlocks(ctxT(t), "race", []string{id}, blob.WriteOptions{Conditions: blob.Conditions{IfMatch: base.ETag}})
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, blob.ErrStale), errors.Is(err, blob.ErrInvalid):
			// The loser either fails its condition or finds its staged
			// block discarded by the winner's commit.
		default:
			t.Fatalf("racing commit: unexpected error %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d racing commits succeeded, want exactly 1 (errors %v)", won, errs)
	}
}

func testDelete(t *testing.T, f Fixture) {
	a := mustPut(t, f.Store, "del", []byte("x"))
	mustPut(t, f.Store, "del", []byte("y"))
	err := f.Store.Delete(ctxT(t), "del", blob.Conditions{IfMatch: a.ETag})
	wantErr(t, "Delete IfMatch stale", err, blob.ErrStale)
	if _, err := f.Store.Stat(ctxT(t), "del"); err != nil {
		t.Fatalf("blob gone after a failed conditional delete: %v", err)
	}
	if err := f.Store.Delete(ctxT(t), "del", blob.Conditions{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.Store.Stat(ctxT(t), "del")
	wantErr(t, "Stat after Delete", err, blob.ErrNotFound)
	err = f.Store.Delete(ctxT(t), "del", blob.Conditions{})
	wantErr(t, "Delete missing", err, blob.ErrNotFound)
}

func testCopy(t *testing.T, f Fixture) {
	data := randBytes(8, 2<<20+5)
	src, err := f.Store.Put(ctxT(t), "src/a", data, blob.WriteOptions{Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := f.Store.Copy(ctxT(t), "src/a", src.ETag, "dst/b", blob.WriteOptions{Conditions: blob.Conditions{IfNoneMatchAny: true}})
	if err != nil {
		t.Fatal(err)
	}
	if dst.Size != src.Size || dst.ETag == "" || dst.Name != "dst/b" {
		t.Fatalf("copy attrs = %+v", dst)
	}
	st, err := f.Store.Stat(ctxT(t), "dst/b")
	if err != nil || st.Metadata["k"] != "v" {
		t.Fatalf("copied metadata = %v, %v", st.Metadata, err)
	}
	if got := readAll(t, f.Store, "dst/b", "", len(data)); !bytes.Equal(got, data) {
		t.Fatal("copied content differs")
	}
	_, err = f.Store.Copy(ctxT(t), "src/a", src.ETag, "dst/b", blob.WriteOptions{Conditions: blob.Conditions{IfNoneMatchAny: true}})
	wantErr(t, "Copy onto an existing blob with IfNoneMatchAny", err, blob.ErrExists)
	_, err = f.Store.Copy(ctxT(t), "src/missing", "", "dst/c", blob.WriteOptions{})
	wantErr(t, "Copy of a missing source", err, blob.ErrNotFound)
	mustPut(t, f.Store, "src/a", []byte("changed"))
	_, err = f.Store.Copy(ctxT(t), "src/a", src.ETag, "dst/d", blob.WriteOptions{})
	wantErr(t, "Copy pinned to a stale source ETag", err, blob.ErrStale)
	_, err = f.Store.Stat(ctxT(t), "dst/d")
	wantErr(t, "failed copy left a target", err, blob.ErrNotFound)
}

func testNames(t *testing.T, f Fixture) {
	odd := []string{"with space.txt", "per%cent", "ünïcödé/файл", "a+b=c&d", "q?uery#frag", "dir.with.dots/x"}
	for i, n := range odd {
		data := []byte(fmt.Sprintf("content %d", i))
		if _, err := f.Store.Put(ctxT(t), n, data, blob.WriteOptions{}); err != nil {
			t.Fatalf("Put(%q): %v", n, err)
		}
		if got := readAll(t, f.Store, n, "", len(data)); !bytes.Equal(got, data) {
			t.Fatalf("round trip of %q = %q", n, got)
		}
	}
	flat, _, _ := listAll(t, f.Store, blob.ListOptions{})
	want := slices.Clone(odd)
	sort.Strings(want)
	if !slices.Equal(flat, want) {
		t.Fatalf("listed names = %q, want %q", flat, want)
	}
	for _, bad := range []string{"", "/abs", "a//b", "a/../b"} {
		_, err := f.Store.Put(ctxT(t), bad, nil, blob.WriteOptions{})
		wantErr(t, fmt.Sprintf("Put(%q)", bad), err, blob.ErrInvalid)
	}
}

func testMissingContainer(t *testing.T, f Fixture) {
	if f.Missing == nil {
		t.Skip("fixture has no missing-container store")
	}
	_, err := f.Missing.Stat(ctxT(t), "x")
	wantErr(t, "Stat in a missing container", err, blob.ErrContainerNotFound)
	if errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing container reported as a missing blob: %v", err)
	}
	_, err = f.Missing.List(ctxT(t), blob.ListOptions{Delimiter: "/"})
	wantErr(t, "List in a missing container", err, blob.ErrContainerNotFound)
	_, err = f.Missing.Put(ctxT(t), "x", []byte("x"), blob.WriteOptions{})
	wantErr(t, "Put in a missing container", err, blob.ErrContainerNotFound)
	_, err = f.Missing.ReadAt(ctxT(t), "x", "", make([]byte, 1), 0)
	wantErr(t, "ReadAt in a missing container", err, blob.ErrContainerNotFound)
}

func testThrottling(t *testing.T, f Fixture) {
	if f.InjectThrottle == nil {
		t.Skip("fixture cannot inject 503s")
	}
	mustPut(t, f.Store, "busy", []byte("data"))
	t.Cleanup(func() { f.InjectThrottle(0) })

	// Fewer 503s than retries: the caller never sees them.
	f.InjectThrottle(f.MaxRetries)
	if _, err := f.Store.Stat(ctxT(t), "busy"); err != nil {
		t.Fatalf("Stat after %d injected 503s: %v (the store must retry)", f.MaxRetries, err)
	}
	f.InjectThrottle(f.MaxRetries)
	if got := readAll(t, f.Store, "busy", "", 4); string(got) != "data" {
		t.Fatalf("read after injected 503s = %q", got)
	}
	// More 503s than retries: a clear sentinel, no data written.
	f.InjectThrottle(f.MaxRetries + 1)
	_, err := f.Store.Put(ctxT(t), "busy2", []byte("x"), blob.WriteOptions{})
	wantErr(t, "Put through persistent 503s", err, blob.ErrThrottled)
	f.InjectThrottle(0)
	_, err = f.Store.Stat(ctxT(t), "busy2")
	wantErr(t, "Stat of a blob whose Put was throttled", err, blob.ErrNotFound)
}

func testCancelled(t *testing.T, f Fixture) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.Store.Stat(ctx, "x")
	wantErr(t, "Stat with a cancelled context", err, context.Canceled)
	_, err = f.Store.ReadAt(ctx, "x", "", make([]byte, 1), 0)
	wantErr(t, "ReadAt with a cancelled context", err, context.Canceled)
}

// testETagSpelledOnce: one version has one ETag, whichever call reports it
// (the service quotes it in headers and not in listings). Caches key on
// it and reads compare it.
func testETagSpelledOnce(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	put, err := f.Store.Put(ctx, "e/x", []byte("x"), blob.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Store.Stat(ctx, "e/x")
	if err != nil {
		t.Fatal(err)
	}
	page, err := f.Store.List(ctx, blob.ListOptions{Prefix: "e/"})
	if err != nil || len(page.Blobs) != 1 {
		t.Fatalf("list: %v, %d blobs", err, len(page.Blobs))
	}
	if put.ETag != st.ETag || st.ETag != page.Blobs[0].ETag {
		t.Fatalf("one version, three spellings: Put %q, Stat %q, List %q", put.ETag, st.ETag, page.Blobs[0].ETag)
	}
	var buf [1]byte
	if _, err := f.Store.ReadAt(ctx, "e/x", page.Blobs[0].ETag, buf[:], 0); err != nil {
		t.Fatalf("read pinned to the listed ETag: %v", err)
	}
	if err := f.Store.Delete(ctx, "e/x", blob.Conditions{IfMatch: page.Blobs[0].ETag}); err != nil {
		t.Fatalf("delete conditional on the listed ETag: %v", err)
	}
}
