package mounte2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// Every test here mounts the real binary over Azurite, in a container of
// its own, and checks what users see through the kernel.

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v (%s)", what, err, want, unix.ErrnoName(want))
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func wantContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s holds %s, want %s", path, preview(got), preview(want))
	}
}

// wantBlob checks a blob's content through the store, not the mount.
func wantBlob(t *testing.T, s blob.Store, name string, want []byte) {
	t.Helper()
	_, got := readBlob(t, s, name)
	if !bytes.Equal(got, want) {
		t.Errorf("blob %s holds %s, want %s", name, preview(got), preview(want))
	}
}

func wantNoBlob(t *testing.T, s blob.Store, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if a, err := s.Stat(ctx, name); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob %s: got %+v, %v; want not found", name, a, err)
	}
}

func preview(b []byte) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes (sha256 %x…)", len(b), sha256.Sum256(b))
}

// 1. testing/fstest.TestFS on a seeded tree: nested directories, implicit
// directories made only of prefixes, BlobFuse2 hdi_isfolder markers (empty
// and with children), files of various sizes and names. It also checks
// that the tree seen through the mount is exactly the seeded one.
func TestMountFSTestSeededTree(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	files := map[string][]byte{
		"top.txt":                          []byte("hello from blobfs\n"),
		"empty.bin":                        {},
		"a/sibling.txt":                    []byte("sibling"),
		"a/b/mid.bin":                      pseudoRandom(1, 300<<10+1),
		"a/b/c/deep.txt":                   []byte("deep inside"),
		"implicit/only/prefix/leaf.dat":    pseudoRandom(2, 4097),
		"withmarker/child.txt":             []byte("a marker with a child"),
		"names/space name.txt":             []byte("space"),
		"names/ünïcødé.txt":                []byte("unicode"),
		"names/dash-under_score.v1.tar.gz": pseudoRandom(3, 123),
		"big.bin":                          pseudoRandom(4, testenv.Pick(3<<20+17, 40<<20+17)),
	}
	markers := []string{"emptydir", "withmarker", "a/b/emptysub"}
	putFiles(t, s, files)
	for _, d := range markers {
		putDirMarker(t, s, d)
	}
	wantDirs := []string{".", "a", "a/b", "a/b/c", "a/b/emptysub", "emptydir", "implicit", "implicit/only",
		"implicit/only/prefix", "names", "withmarker"}

	m := mountT(t, c, mountConfig{})
	fsys := os.DirFS(m.Dir)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	names = append(names, "emptydir", "a/b/emptysub")
	slices.Sort(names)
	if err := fstest.TestFS(fsys, names...); err != nil {
		t.Errorf("fstest.TestFS: %v", err)
	}

	// Exactly the seeded tree: no marker shows as a file, nothing is
	// missing, every byte matches.
	gotFiles := map[string][]byte{}
	var gotDirs []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			gotDirs = append(gotDirs, p)
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: unexpected type %v", p, d.Type())
		}
		b, err := fs.ReadFile(fsys, p)
		gotFiles[p] = b
		return err
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	slices.Sort(gotDirs)
	if !slices.Equal(gotDirs, wantDirs) {
		t.Errorf("directories:\n got %q\nwant %q", gotDirs, wantDirs)
	}
	for name, want := range files {
		got, ok := gotFiles[name]
		switch {
		case !ok:
			t.Errorf("%s: missing from the mount", name)
		case !bytes.Equal(got, want):
			t.Errorf("%s: content %s, seeded %s", name, preview(got), preview(want))
		}
		delete(gotFiles, name)
	}
	for name := range gotFiles {
		t.Errorf("%s: in the mount but never seeded", name)
	}
	// Markers are directories to stat as well as to readdir.
	for _, d := range markers {
		if fi, err := os.Stat(m.Path(d)); err != nil || !fi.IsDir() {
			t.Errorf("stat marker %s: %v, %v; want a directory", d, fi, err)
		}
	}
}

// 2. A large file written through the mount (hashed as it streams) reads
// back with the same SHA-256 through a second, fresh mount with its own
// cache directory, so nothing local can answer.
func TestMountLargeFileRoundTripAcrossMounts(t *testing.T) {
	requireHarness(t)
	size := testenv.Pick[int64](64<<20, 1<<30)
	c := newContainer(t)
	w := mountT(t, c, mountConfig{})

	f, err := os.Create(w.Path("large.bin"))
	if err != nil {
		t.Fatal(err)
	}
	hw := sha256.New()
	n, err := io.CopyBuffer(f, io.TeeReader(io.LimitReader(randomStream(42), size), hw), make([]byte, 1<<20))
	if err != nil || n != size {
		f.Close()
		t.Fatalf("write: %d bytes, %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after writing (the upload): %v", err)
	}
	want := hw.Sum(nil)
	if fi, err := os.Stat(w.Path("large.bin")); err != nil || fi.Size() != size {
		t.Errorf("stat on the writing mount: %v, %v; want size %d", fi, err, size)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if a, err := newStore(t, c).Stat(ctx, "large.bin"); err != nil || a.Size != size {
		t.Errorf("blob: %+v, %v; want size %d", a, err, size)
	}

	r := mountT(t, c, mountConfig{})
	if r.CacheDir == w.CacheDir {
		t.Fatal("the second mount shares the first one's cache dir")
	}
	g, err := os.Open(r.Path("large.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	hr := sha256.New()
	n, err = io.CopyBuffer(hr, g, make([]byte, 1<<20))
	if err != nil || n != size {
		t.Fatalf("read through the second mount: %d bytes, %v; want %d", n, err, size)
	}
	if got := hr.Sum(nil); !bytes.Equal(got, want) {
		t.Errorf("SHA-256 through the second mount %x, written %x", got, want)
	}
}

// 3. A 10,000-entry directory lists exactly (names and count) and every
// entry stats, as `ls -l` does.
func TestMountLargeDirectory(t *testing.T) {
	requireHarness(t)
	n := testenv.Pick(10_000, 10_000)
	// An Azurite of its own: Azurite filters and sorts every blob it holds
	// for each listing, so 10,000 more would slow every other test.
	srv := azurite.StartT(t, azurite.Options{})
	c := newContainerOn(t, srv)
	s := newStoreOn(t, srv, c)
	name := func(i int) string { return fmt.Sprintf("entry-%05d.txt", i) }
	content := func(i int) []byte { return []byte(strings.Repeat("x", i%97)) }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := parallelDo(n, 32, func(i int) error {
		_, err := s.Put(ctx, "many/"+name(i), content(i), blob.WriteOptions{})
		return err
	}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	// Azurite 3.37 fills a delimiter listing by reading maxresults blobs
	// at a time, sorting all candidates for each read. blobfs's start-up
	// check lists the root with maxresults=1, so 10,000 blobs folding
	// into the one prefix "many/" would take 10,000 sorts of 10,000
	// (minutes; real Azure answers at once). A root blob that sorts
	// before "many/" ends that page at its first read.
	putBlob(t, s, "a-readme.txt", []byte("not in many/"), nil)

	m := mountT(t, c, mountConfig{Endpoint: srv.BlobEndpoint()})
	dir := m.Path("many")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir: %v", err)
	}
	if len(ents) != n {
		t.Errorf("readdir: %d entries, want %d", len(ents), n)
	}
	got := make([]string, len(ents))
	for i, e := range ents {
		got[i] = e.Name()
	}
	want := make([]string, n)
	for i := range n {
		want[i] = name(i)
	}
	if !slices.Equal(got, want) {
		missing, extra := diff(want, got)
		t.Errorf("readdir names differ: %d missing (e.g. %q), %d unexpected (e.g. %q)", len(missing), head(missing), len(extra), head(extra))
	}
	// ls -l: lstat of every entry.
	bad := 0
	for i, e := range ents {
		fi, err := e.Info()
		if err == nil && (!fi.Mode().IsRegular() || fi.Size() != int64(len(content(i)))) {
			err = fmt.Errorf("mode %v size %d, want a regular file of %d bytes", fi.Mode(), fi.Size(), len(content(i)))
		}
		if err != nil {
			if bad++; bad <= 5 {
				t.Errorf("lstat %s: %v", e.Name(), err)
			}
		}
	}
	if bad > 5 {
		t.Errorf("… %d entries failed lstat in all", bad)
	}
	// And the real thing.
	out, err := exec.Command("ls", "-l", "--color=never", dir).Output()
	if err != nil {
		t.Fatalf("ls -l: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != n+1 || !strings.HasPrefix(lines[0], "total ") {
		t.Errorf("ls -l printed %d lines (first %q), want a total line and %d entries", len(lines), lines[0], n)
	}
}

func diff(want, got []string) (missing, extra []string) {
	g := map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	w := map[string]bool{}
	for _, s := range want {
		w[s] = true
		if !g[s] {
			missing = append(missing, s)
		}
	}
	for _, s := range got {
		if !w[s] {
			extra = append(extra, s)
		}
	}
	return missing, extra
}

func head(s []string) []string { return s[:min(len(s), 3)] }

// 4. Namespace and write semantics, as POSIX and fs/doc.go state them,
// checked through the mount and, for what must be durable, in the
// container itself.
func TestMountPOSIXSemantics(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	m := mountT(t, c, mountConfig{})
	p := m.Path

	t.Run("mkdir-rmdir", func(t *testing.T) {
		if err := os.Mkdir(p("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p("d")); err != nil || !fi.IsDir() {
			t.Fatalf("stat new dir: %v %v", fi, err)
		}
		wantErrno(t, "mkdir existing", os.Mkdir(p("d"), 0o755), syscall.EEXIST)
		// An empty directory survives as a BlobFuse2 marker blob.
		if a, _ := readBlob(t, s, "d"); !a.IsDirMarker() {
			t.Errorf("mkdir wrote %+v, want an hdi_isfolder marker", a.Metadata)
		}
		writeFile(t, p("d", "f"), []byte("x"))
		wantErrno(t, "rmdir non-empty", unix.Rmdir(p("d")), syscall.ENOTEMPTY)
		wantErrno(t, "rmdir a file", unix.Rmdir(p("d", "f")), syscall.ENOTDIR)
		wantErrno(t, "unlink a directory", unix.Unlink(p("d")), syscall.EISDIR)
		wantErrno(t, "mkdir under a file", os.Mkdir(p("d", "f", "sub"), 0o755), syscall.ENOTDIR)
		if err := os.Remove(p("d", "f")); err != nil {
			t.Fatal(err)
		}
		if err := unix.Rmdir(p("d")); err != nil {
			t.Fatalf("rmdir emptied dir: %v", err)
		}
		_, err := os.Stat(p("d"))
		wantErrno(t, "stat removed dir", err, syscall.ENOENT)
		wantNoBlob(t, s, "d")
		wantNoBlob(t, s, "d/f")
		wantErrno(t, "rmdir missing", unix.Rmdir(p("d")), syscall.ENOENT)
	})

	t.Run("rename-file", func(t *testing.T) {
		writeFile(t, p("src"), []byte("source"))
		if err := os.Rename(p("src"), p("dst")); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(p("src"))
		wantErrno(t, "stat renamed-away source", err, syscall.ENOENT)
		wantContent(t, p("dst"), []byte("source"))
		wantNoBlob(t, s, "src")
		wantBlob(t, s, "dst", []byte("source"))
	})

	t.Run("rename-over-existing", func(t *testing.T) {
		writeFile(t, p("a"), []byte("AAA"))
		writeFile(t, p("b"), []byte("BBBBBBBB"))
		if err := os.Rename(p("a"), p("b")); err != nil {
			t.Fatal(err)
		}
		wantContent(t, p("b"), []byte("AAA"))
		if fi, err := os.Stat(p("b")); err != nil || fi.Size() != 3 {
			t.Errorf("stat replaced target: %v %v; want size 3", fi, err)
		}
		_, err := os.Stat(p("a"))
		wantErrno(t, "stat source", err, syscall.ENOENT)
		wantBlob(t, s, "b", []byte("AAA"))
		wantNoBlob(t, s, "a")
	})

	t.Run("rename-noreplace", func(t *testing.T) {
		writeFile(t, p("c"), []byte("C"))
		writeFile(t, p("e"), []byte("E"))
		err := unix.Renameat2(unix.AT_FDCWD, p("c"), unix.AT_FDCWD, p("e"), unix.RENAME_NOREPLACE)
		wantErrno(t, "RENAME_NOREPLACE onto an existing file", err, syscall.EEXIST)
		wantContent(t, p("c"), []byte("C"))
		wantContent(t, p("e"), []byte("E"))
		if err := unix.Renameat2(unix.AT_FDCWD, p("c"), unix.AT_FDCWD, p("c2"), unix.RENAME_NOREPLACE); err != nil {
			t.Fatalf("RENAME_NOREPLACE onto a new name: %v", err)
		}
		wantContent(t, p("c2"), []byte("C"))
		wantBlob(t, s, "c2", []byte("C"))
		wantNoBlob(t, s, "c")
	})

	t.Run("rename-directory", func(t *testing.T) {
		if err := os.MkdirAll(p("r", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p("r", "x"), []byte("x"))
		writeFile(t, p("r", "sub", "y"), []byte("y"))
		if err := os.Rename(p("r"), p("r2")); err != nil {
			t.Fatal(err)
		}
		wantContent(t, p("r2", "x"), []byte("x"))
		wantContent(t, p("r2", "sub", "y"), []byte("y"))
		_, err := os.Stat(p("r"))
		wantErrno(t, "stat renamed dir", err, syscall.ENOENT)
		wantNoBlob(t, s, "r/x")
		wantBlob(t, s, "r2/sub/y", []byte("y"))
	})

	t.Run("rename-type-clashes", func(t *testing.T) {
		if err := os.MkdirAll(p("full", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p("full", "sub", "f"), []byte("f"))
		if err := os.Mkdir(p("emptyd"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p("plain"), []byte("plain"))
		// rename(2) itself: os.Rename answers EEXIST for a directory
		// target without asking the kernel.
		wantErrno(t, "rename a file over a directory", unix.Rename(p("plain"), p("emptyd")), syscall.EISDIR)
		wantErrno(t, "rename a directory over a file", unix.Rename(p("emptyd"), p("plain")), syscall.ENOTDIR)
		err := unix.Rename(p("emptyd"), p("full"))
		if !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			t.Errorf("rename a directory over a non-empty one: %v, want ENOTEMPTY or EEXIST", err)
		}
		wantErrno(t, "rename a directory into itself", unix.Rename(p("full"), p("full", "sub", "inside")), syscall.EINVAL)
		if err := unix.Rename(p("plain"), p("plain")); err != nil {
			t.Errorf("rename a file onto itself: %v", err)
		}
		wantContent(t, p("plain"), []byte("plain"))
		wantContent(t, p("full", "sub", "f"), []byte("f"))
		if fi, err := os.Stat(p("emptyd")); err != nil || !fi.IsDir() {
			t.Errorf("stat emptyd after refused renames: %v %v", fi, err)
		}
	})

	t.Run("read-your-writes", func(t *testing.T) {
		f, err := os.OpenFile(p("ryw"), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte("unsaved")); err != nil {
			t.Fatal(err)
		}
		// Before close: the same handle, another handle and stat agree.
		buf := make([]byte, 16)
		if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "unsaved" {
			t.Errorf("read back through the writing handle: %q, %v", buf[:n], err)
		}
		wantContent(t, p("ryw"), []byte("unsaved"))
		if fi, err := os.Stat(p("ryw")); err != nil || fi.Size() != 7 {
			t.Errorf("stat while open for writing: %v, %v; want size 7", fi, err)
		}
		if err := f.Sync(); err != nil {
			t.Errorf("fsync: %v", err)
		}
		wantBlob(t, s, "ryw", []byte("unsaved")) // durable once fsync returns
	})

	t.Run("unlink", func(t *testing.T) {
		writeFile(t, p("u"), []byte("bye"))
		if err := os.Remove(p("u")); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(p("u"))
		wantErrno(t, "stat unlinked", err, syscall.ENOENT)
		wantErrno(t, "unlink again", unix.Unlink(p("u")), syscall.ENOENT)
		wantNoBlob(t, s, "u")
	})

	t.Run("truncate", func(t *testing.T) {
		writeFile(t, p("t"), []byte("0123456789"))
		if err := os.Truncate(p("t"), 4); err != nil {
			t.Fatal(err)
		}
		wantContent(t, p("t"), []byte("0123"))
		if err := os.Truncate(p("t"), 8); err != nil {
			t.Fatal(err)
		}
		wantContent(t, p("t"), []byte("0123\x00\x00\x00\x00"))
		wantBlob(t, s, "t", []byte("0123\x00\x00\x00\x00"))
		f, err := os.OpenFile(p("t"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(2); err != nil {
			t.Errorf("ftruncate: %v", err)
		}
		if fi, err := f.Stat(); err != nil || fi.Size() != 2 {
			t.Errorf("fstat after ftruncate: %v %v; want size 2", fi, err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		wantContent(t, p("t"), []byte("01"))
		wantBlob(t, s, "t", []byte("01"))
	})

	t.Run("pwrite-in-the-middle", func(t *testing.T) {
		writeFile(t, p("w"), []byte("0123456789"))
		f, err := os.OpenFile(p("w"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("XY"), 3); err != nil {
			t.Errorf("pwrite: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		wantContent(t, p("w"), []byte("012XY56789"))
		wantBlob(t, s, "w", []byte("012XY56789"))
	})

	t.Run("O_TRUNC", func(t *testing.T) {
		writeFile(t, p("o"), []byte("a long old content"))
		f, err := os.OpenFile(p("o"), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := f.Stat(); err != nil || fi.Size() != 0 {
			t.Errorf("fstat after O_TRUNC: %v %v; want size 0", fi, err)
		}
		if _, err := f.Write([]byte("new")); err != nil {
			t.Error(err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		wantContent(t, p("o"), []byte("new"))
		wantBlob(t, s, "o", []byte("new"))
	})

	t.Run("O_APPEND", func(t *testing.T) {
		writeFile(t, p("ap"), []byte("head"))
		f, err := os.OpenFile(p("ap"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		// O_APPEND writes at the end whatever the offset says.
		if _, err := unix.Seek(int(f.Fd()), 0, io.SeekStart); err != nil {
			t.Error(err)
		}
		if _, err := unix.Write(int(f.Fd()), []byte("+tail")); err != nil {
			t.Error(err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		g, err := os.OpenFile(p("ap"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Write([]byte("!")); err != nil {
			t.Error(err)
		}
		if err := g.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		wantContent(t, p("ap"), []byte("head+tail!"))
		wantBlob(t, s, "ap", []byte("head+tail!"))
	})

	t.Run("O_EXCL", func(t *testing.T) {
		writeFile(t, p("x"), []byte("x"))
		_, err := os.OpenFile(p("x"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		wantErrno(t, "O_CREAT|O_EXCL on an existing file", err, syscall.EEXIST)
		f, err := os.OpenFile(p("x-new"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatalf("O_CREAT|O_EXCL on a new name: %v", err)
		}
		f.Close()
		wantBlob(t, s, "x-new", nil)
	})
}

// A file unlinked while open for reading stays readable through the
// open descriptor (POSIX; fs/doc.go: "unlink of an open file keeps its
// handles working"): the tempfile idiom `f = open(p); unlink(p); read(f)`.
// (Found by this test: reads were pinned to the deleted blob's ETag.)
func TestMountReadAfterUnlinkWhileOpen(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	m := mountT(t, c, mountConfig{})
	p := m.Path
	writeFile(t, p("uo"), []byte("still readable"))
	f, err := os.Open(p("uo"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p("uo")); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil || string(b) != "still readable" {
		t.Errorf("read an unlinked open file: %q, %v", b, err)
	}
	_, err = os.Stat(p("uo"))
	wantErrno(t, "stat unlinked open file", err, syscall.ENOENT)
	wantNoBlob(t, s, "uo")
}

// 5. Eight concurrent readers at random offsets, some sharing one file
// descriptor, get exactly the seeded bytes; so does an mmap of the file.
func TestMountConcurrentReadersAndMmap(t *testing.T) {
	requireHarness(t)
	size := testenv.Pick(32<<20+4321, 256<<20+4321)
	data := pseudoRandom(5, size)
	c := newContainer(t)
	putBlob(t, newStore(t, c), "data.bin", data, nil)
	m := mountT(t, c, mountConfig{})

	shared, err := os.Open(m.Path("data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	const readers, reads = 8, 24
	withTimeout(t, 2*time.Minute, "concurrent readers", func() {
		err = parallelDo(readers, readers, func(g int) error {
			f := shared
			if g%2 == 1 { // half the readers have their own descriptor
				own, err := os.Open(m.Path("data.bin"))
				if err != nil {
					return err
				}
				defer own.Close()
				f = own
			}
			r := rand.New(rand.NewPCG(uint64(g), 99))
			buf := make([]byte, 1<<20)
			for range reads {
				off := r.IntN(size)
				p := buf[:1+r.IntN(len(buf))]
				n, err := f.ReadAt(p, int64(off))
				want := data[off:min(off+len(p), size)]
				if n != len(want) || (err != nil && !(errors.Is(err, io.EOF) && off+len(p) > size)) {
					return fmt.Errorf("reader %d: ReadAt(%d bytes at %d) = %d, %v; want %d", g, len(p), off, n, err, len(want))
				}
				if !bytes.Equal(p[:n], want) {
					return fmt.Errorf("reader %d: %d bytes at %d differ from the seeded data", g, n, off)
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Error(err)
	}

	f, err := os.Open(m.Path("data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mm, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(mm)
	if !bytes.Equal(mm, data) {
		i := 0
		for i < size && mm[i] == data[i] {
			i++
		}
		t.Errorf("mmap differs from the seeded data at byte %d", i)
	}
}

// 6. A symlink made through the mount is stored as BlobFuse2 stores it
// (metadata is_symlink=true, the target as content) and reads back through
// a fresh mount; one seeded that way is a symlink too.
func TestMountSymlinkRoundTrip(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	putBlob(t, s, "seeded-link", []byte("dir/target.txt"), map[string]string{"is_symlink": "true"})
	m := mountT(t, c, mountConfig{})

	if err := os.Mkdir(m.Path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.Path("dir", "target.txt"), []byte("the target"))
	links := map[string]string{"link": "dir/target.txt", "dangling": "/no/such/place", "dir/up": "../dir/target.txt"}
	for name, target := range links {
		if err := os.Symlink(target, m.Path(name)); err != nil {
			t.Fatalf("symlink %s: %v", name, err)
		}
		if got, err := os.Readlink(m.Path(name)); err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, target)
		}
	}
	wantContent(t, m.Path("link"), []byte("the target"))

	for name, target := range links {
		a, content := readBlob(t, s, name)
		if a.Metadata["is_symlink"] != "true" || string(content) != target {
			t.Errorf("blob %s: metadata %v, content %q; want is_symlink=true and %q", name, a.Metadata, content, target)
		}
	}

	links["seeded-link"] = "dir/target.txt"
	fresh := mountT(t, c, mountConfig{})
	for name, target := range links {
		fi, err := os.Lstat(fresh.Path(name))
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("lstat %s through a fresh mount: %v, %v; want a symlink", name, fi, err)
			continue
		}
		if got, err := os.Readlink(fresh.Path(name)); err != nil || got != target {
			t.Errorf("readlink %s through a fresh mount = %q, %v; want %q", name, got, err, target)
		}
	}
	wantContent(t, fresh.Path("link"), []byte("the target"))
	wantContent(t, fresh.Path("seeded-link"), []byte("the target"))
	wantContent(t, fresh.Path("dir", "up"), []byte("the target"))
	_, err := os.Stat(fresh.Path("dangling"))
	wantErrno(t, "stat through a dangling link", err, syscall.ENOENT)
}

// localTree makes a small tree on local disk: nested dirs, an empty dir,
// an empty file, an executable, a binary file over a MiB, a symlink.
func localTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(testDir(t, "src"), "tree")
	for _, d := range []string{"sub/deeper", "emptydir"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string][]byte{
		"a.txt":                []byte("alpha\n"),
		"empty":                nil,
		"sub/b.bin":            pseudoRandom(7, 1<<20+3),
		"sub/deeper/c.txt":     []byte("gamma\n"),
		"sub/deeper/medium.pt": pseudoRandom(8, 200<<10),
	} {
		writeFile(t, filepath.Join(root, name), data)
	}
	if err := os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	return root
}

// sameTree checks that got holds every directory, regular file (by
// content) and symlink (by target) of want, and nothing else.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		q := filepath.Join(got, rel)
		fi, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		switch {
		case d.IsDir():
			if !fi.IsDir() {
				t.Errorf("%s: %v, want a directory", rel, fi.Mode())
			}
		case d.Type()&fs.ModeSymlink != 0:
			wt, _ := os.Readlink(p)
			gt, err := os.Readlink(q)
			if err != nil || gt != wt {
				t.Errorf("%s: readlink %q, %v; want %q", rel, gt, err, wt)
			}
		default:
			b, _ := os.ReadFile(p)
			wantContent(t, q, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk copy: %v", err)
			return nil
		}
		if rel, _ := filepath.Rel(got, p); !seen[rel] {
			t.Errorf("%s: in the copy but not in the source", rel)
		}
		return nil
	})
}

func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	} else if len(out) > 0 {
		t.Logf("%s said: %s", name, out)
	}
}

// 7. cp -a and rsync -a of a local tree into the mount exit 0 and copy
// every byte; a second rsync after a local change updates the file (rsync
// writes a temporary file and renames it over the old one).
func TestMountCpAndRsync(t *testing.T) {
	requireHarness(t)
	for _, tool := range []string{"cp", "rsync"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (scripts/setup.sh installs it): %v", tool, err)
		}
	}
	src := localTree(t)
	c := newContainer(t)
	m := mountT(t, c, mountConfig{})

	runTool(t, "cp", "-a", src, m.Path("cp"))
	sameTree(t, src, m.Path("cp"))

	runTool(t, "rsync", "-a", src+"/", m.Path("rsync")+"/")
	sameTree(t, src, m.Path("rsync"))

	src2 := filepath.Join(filepath.Dir(src), "tree2")
	runTool(t, "cp", "-a", src, src2)
	writeFile(t, filepath.Join(src2, "a.txt"), []byte("alpha, second edition\n"))
	if err := os.Remove(filepath.Join(src2, "sub", "deeper", "c.txt")); err != nil {
		t.Fatal(err)
	}
	runTool(t, "rsync", "-a", "--delete", "--checksum", src2+"/", m.Path("rsync")+"/")
	sameTree(t, src2, m.Path("rsync"))

	// What the tools left is what a fresh mount shows: every byte, and no
	// temporary files.
	fresh := mountT(t, c, mountConfig{})
	sameTree(t, src, fresh.Path("cp"))
	sameTree(t, src2, fresh.Path("rsync"))
}

// 8. A file created through a second mount of the same container shows in
// the first one within the TTLs (1 s each here), as do its replacement and
// its removal. Polls up to 30 s: this asserts that it shows, not how fast.
func TestMountSeesOtherMountsChanges(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	ttls := mountConfig{Args: []string{"--negative-timeout", "1s", "--attr-timeout", "1s", "--entry-timeout", "1s", "--list-timeout", "1s"}}
	a := mountT(t, c, ttls)
	b := mountT(t, c, ttls)

	// Make the first mount cache the absence: a negative lookup and a
	// listing without the name.
	_, err := os.Stat(a.Path("new.txt"))
	wantErrno(t, "stat before creation", err, syscall.ENOENT)
	if ents, err := os.ReadDir(a.Dir); err != nil || len(ents) != 0 {
		t.Fatalf("readdir of the empty container: %v, %v", ents, err)
	}

	writeFile(t, b.Path("new.txt"), []byte("v1"))
	eventually(t, "new.txt readable through the first mount", func() error {
		return contentIs(a.Path("new.txt"), []byte("v1"))
	})
	eventually(t, "new.txt listed by the first mount", func() error {
		ents, err := os.ReadDir(a.Dir)
		if err != nil {
			return err
		}
		if len(ents) != 1 || ents[0].Name() != "new.txt" {
			return fmt.Errorf("listing %v", ents)
		}
		return nil
	})

	if err := os.Mkdir(b.Path("newdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a directory made by the second mount", func() error {
		fi, err := os.Stat(a.Path("newdir"))
		if err == nil && !fi.IsDir() {
			err = fmt.Errorf("mode %v", fi.Mode())
		}
		return err
	})
	writeFile(t, b.Path("newdir", "child"), []byte("child"))
	eventually(t, "a file in that directory", func() error {
		ents, err := os.ReadDir(a.Path("newdir"))
		if err == nil && (len(ents) != 1 || ents[0].Name() != "child") {
			err = fmt.Errorf("listing %v", ents)
		}
		if err != nil {
			return err
		}
		return contentIs(a.Path("newdir", "child"), []byte("child"))
	})

	writeFile(t, b.Path("new.txt"), []byte("version two"))
	eventually(t, "the replaced content through the first mount", func() error {
		return contentIs(a.Path("new.txt"), []byte("version two"))
	})

	if err := os.Remove(b.Path("new.txt")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new.txt gone from the first mount", func() error {
		if _, err := os.Stat(a.Path("new.txt")); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("stat: %v", err)
		}
		return nil
	})
}

func contentIs(path string, want []byte) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("content %q, want %q", got, want)
	}
	return nil
}

// eventually polls cond for up to 30 s and fails the test with its last
// error if it never holds.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: still not true after 30s: %v", what, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// asUser runs a shell script as uid:gid with the mount directory as $1.
func asUser(uid, gid uint32, dir, script string) (string, error) {
	cmd := exec.Command("/bin/sh", "-c", script, "sh", dir)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// 9. With --allow-other --uid 1000 --gid 1000 --umask 027, a process
// running as uid 1000 reads and writes; everything is owned 1000:1000
// with mode 0640 (files) and 0750 (directories), and the kernel enforces
// those bits for other users (default_permissions).
func TestMountAllowOtherUID(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	putBlob(t, s, "seeded.txt", []byte("seeded-content"), nil)
	m := mountT(t, c, mountConfig{Args: []string{"--allow-other", "--uid", "1000", "--gid", "1000", "--umask", "027"}})

	out, err := asUser(1000, 1000, m.Dir, `set -e
cat "$1/seeded.txt"; echo
printf by-uid-1000 > "$1/mine.txt"
mkdir "$1/mydir"
printf x > "$1/mydir/f"
cat "$1/mine.txt"; echo
ls "$1" | tr '\n' ' '; echo
stat -c '%u:%g:%a' "$1/mine.txt" "$1/mydir" "$1/seeded.txt" "$1"`)
	want := "seeded-content\nby-uid-1000\nmine.txt mydir seeded.txt \n1000:1000:640\n1000:1000:750\n1000:1000:640\n1000:1000:750\n"
	if err != nil || out != want {
		t.Errorf("as uid 1000: %v\n got %q\nwant %q", err, out, want)
	}
	wantBlob(t, s, "mine.txt", []byte("by-uid-1000"))
	wantBlob(t, s, "mydir/f", []byte("x"))

	for name, want := range map[string]os.FileMode{"mine.txt": 0o640, "seeded.txt": 0o640, "mydir": fs.ModeDir | 0o750, "mydir/f": 0o640, "": fs.ModeDir | 0o750} {
		fi, err := os.Stat(m.Path(name))
		if err != nil {
			t.Errorf("stat %q: %v", name, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1000 || st.Gid != 1000 || fi.Mode() != want {
			t.Errorf("stat %q: %d:%d %v, want 1000:1000 %v", name, st.Uid, st.Gid, fi.Mode(), want)
		}
	}

	// Group 1000, another uid: may read (0640), may not write.
	out, err = asUser(1001, 1000, m.Dir, `cat "$1/seeded.txt" && printf nope > "$1/seeded.txt"`)
	if err == nil || !strings.HasPrefix(out, "seeded-content") || !strings.Contains(out, "Permission denied") {
		t.Errorf("uid 1001 gid 1000: %v %q; want the read to work and the write to be denied", err, out)
	}
	// Anyone else: not even the mount's root directory.
	out, err = asUser(2000, 2000, m.Dir, `cat "$1/seeded.txt"`)
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("uid 2000: %v %q; want permission denied", err, out)
	}
	wantBlob(t, s, "seeded.txt", []byte("seeded-content"))
}

// 13. statfs on the mount reports the cache directory's filesystem.
func TestMountStatfsIsCacheDir(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	m := mountT(t, c, mountConfig{})
	var mst, cst unix.Statfs_t
	if err := unix.Statfs(m.Dir, &mst); err != nil {
		t.Fatalf("statfs mount: %v", err)
	}
	if err := unix.Statfs(m.CacheDir, &cst); err != nil {
		t.Fatalf("statfs cache dir: %v", err)
	}
	if mst.Blocks != cst.Blocks || mst.Bsize != cst.Bsize {
		t.Errorf("statfs: mount %d blocks of %d, cache dir %d blocks of %d", mst.Blocks, mst.Bsize, cst.Blocks, cst.Bsize)
	}
	if mst.Bavail == 0 || mst.Bavail > mst.Blocks {
		t.Errorf("statfs: %d of %d blocks available", mst.Bavail, mst.Blocks)
	}
	if mst.Namelen != 255 {
		t.Errorf("statfs: name length %d, want 255 (NAME_MAX)", mst.Namelen)
	}
	if mst.Type == cst.Type {
		t.Errorf("statfs type %#x on the mount is the cache dir's own: is this the mount?", mst.Type)
	}
}
