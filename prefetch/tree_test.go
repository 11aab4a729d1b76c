package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
)

func entryNames(es []Entry) []string {
	var out []string
	for _, e := range es {
		n := e.Name
		if e.IsDir {
			n += "/"
		}
		out = append(out, n)
	}
	return out
}

func TestStoreTree(t *testing.T) {
	ctx := context.Background()
	st := memblob.New()
	put := func(name string, data string, md map[string]string) {
		t.Helper()
		if _, err := st.Put(ctx, name, []byte(data), blob.WriteOptions{Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	marker := map[string]string{blob.MetaIsFolder: "true"}
	put("p/a.txt", "hello", nil)
	put("p/d/x", "1", nil)
	put("p/m", "", marker)   // directory marker (BlobFuse2, portal)
	put("p/d", "", marker)   // marker and prefix of the same directory
	put("p/e/", "", nil)     // "dir/" placeholder blob
	put("p/e/y", "22", nil)  //
	put("other/z", "x", nil) // outside the prefix
	tree := NewStoreTree(st, "/p/")

	ents, err := tree.ReadDir(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := entryNames(ents), []string{"a.txt", "d/", "e/", "m/"}; !slices.Equal(got, want) {
		t.Errorf("root: %v, want %v", got, want)
	}
	if ents[0].Size != 5 || ents[0].ModTime.IsZero() {
		t.Errorf("a.txt entry %+v", ents[0])
	}
	ents, err = tree.ReadDir(ctx, "e")
	if err != nil || !slices.Equal(entryNames(ents), []string{"y"}) {
		t.Errorf("e: %v %v", entryNames(ents), err)
	}
	if ents, err := tree.ReadDir(ctx, "m"); err != nil || len(ents) != 0 {
		t.Errorf("empty marked dir: %v %v", ents, err)
	}
	if _, err := tree.ReadDir(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}

	for _, c := range []struct {
		name  string
		isDir bool
		size  int64
	}{{"", true, 0}, {"a.txt", false, 5}, {"d", true, 0}, {"m", true, 0}, {"e", true, 0}, {"e/y", false, 2}} {
		e, err := tree.Stat(ctx, c.name)
		if err != nil || e.IsDir != c.isDir || e.Size != c.size {
			t.Errorf("Stat(%q) = %+v, %v", c.name, e, err)
		}
	}
	if _, err := tree.Stat(ctx, "zz"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat missing: %v", err)
	}
	if _, err := tree.Stat(ctx, "../other/z"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Stat escaping: %v", err)
	}
	p := make([]byte, 3)
	if n, err := tree.ReadAt(ctx, "a.txt", p, 2); n != 3 || err != nil || string(p) != "llo" {
		t.Errorf("ReadAt = %d %v %q", n, err, p)
	}
	if _, err := tree.ReadAt(ctx, "a.txt", p, 4); !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt past end: %v", err)
	}
}

// TestStoreTreePaging lists a directory larger than one service page.
func TestStoreTreePaging(t *testing.T) {
	ctx := context.Background()
	st := memblob.New()
	const n = blob.MaxListResults + 7
	for i := 0; i < n; i++ {
		if _, err := st.Put(ctx, fmt.Sprintf("big/f%05d", i), nil, blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := NewStoreTree(st, "").ReadDir(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n || ents[n-1].Name != fmt.Sprintf("f%05d", n-1) {
		t.Fatalf("%d entries, last %q", len(ents), ents[len(ents)-1].Name)
	}
}

func TestDirTree(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "c"), 0o755))
	must(os.WriteFile(filepath.Join(root, "c", "epoch=1-step=10.ckpt"), torchZip(t, "x"), 0o644))
	must(os.Symlink("epoch=1-step=10.ckpt", filepath.Join(root, "c", "last.ckpt")))
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644))
	must(os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "c", "escape")))
	must(os.Symlink("nowhere", filepath.Join(root, "c", "dangling")))

	dt, err := OpenDir(root)
	must(err)
	defer dt.Close()
	ents, err := dt.ReadDir(ctx, "c")
	must(err)
	// The escaping and dangling links are left out; last.ckpt is followed.
	if got := entryNames(ents); !slices.Equal(got, []string{"epoch=1-step=10.ckpt", "last.ckpt"}) {
		t.Errorf("entries %v", got)
	}
	if ents[1].Size != ents[0].Size {
		t.Errorf("symlink not followed: %+v", ents[1])
	}
	ck := mustFind(t, dt, "c")
	if ck.Path != "c/last.ckpt" {
		t.Errorf("got %s", ck.Path)
	}
	if _, err := dt.ReadAt(ctx, "c/escape", make([]byte, 1), 0); err == nil {
		t.Error("read through a symlink out of the root")
	}
	if _, err := dt.Stat(ctx, "../x"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("escaping name: %v", err)
	}
	if _, err := OpenDir(filepath.Join(root, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenDir missing: %v", err)
	}
}
