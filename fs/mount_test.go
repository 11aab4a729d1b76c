package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
	"github.com/blobfs/blobfs/internal/testenv"
)

// Everything here goes through a real kernel mount: os calls on the
// mountpoint, never the nodes directly.

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func TestMountStatReadLs(t *testing.T) {
	s := memblob.New()
	a := put(t, s, "top.txt", []byte("top"))
	put(t, s, "data/train/0001.bin", []byte("zero-one"))
	put(t, s, "data/train/0002.bin", bytes.Repeat([]byte{7}, 5000))
	if _, err := s.Put(context.Background(), "data/empty", nil, blob.WriteOptions{Metadata: map[string]string{blob.MetaIsFolder: "true"}}); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t, s)
	opts.UID, opts.GID = 1000, 1000
	_, dir := mountT(t, opts)

	root, err := os.Stat(dir)
	if err != nil || !root.IsDir() {
		t.Fatalf("stat root: %v %v", root, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "top.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 3 || fi.Mode() != 0o644 || !fi.ModTime().Equal(a.LastModified) {
		t.Errorf("stat top.txt = size %d mode %v mtime %v; want 3 -rw-r--r-- %v", fi.Size(), fi.Mode(), fi.ModTime(), a.LastModified)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("owner %d:%d, want 1000:1000", st.Uid, st.Gid)
	}
	for _, d := range []string{"data", "data/train", "data/empty"} {
		fi, err := os.Stat(filepath.Join(dir, d))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Errorf("stat %s: %v %v", d, fi, err)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "data/train/0002.bin"))
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{7}, 5000)) {
		t.Errorf("read 0002.bin: %d bytes, %v", len(got), err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, fmt.Sprintf("%s:%v", e.Name(), e.IsDir()))
	}
	if got, want := strings.Join(names, " "), "empty:true train:true"; got != want {
		t.Errorf("ls data = %s, want %s", got, want)
	}
	_, err = os.Stat(filepath.Join(dir, "nope"))
	wantErrno(t, "stat missing", err, syscall.ENOENT)
	_, err = os.Stat(filepath.Join(dir, "top.txt/x"))
	wantErrno(t, "stat below a file", err, syscall.ENOTDIR)
}

func TestMountCreateWriteStatConsistent(t *testing.T) {
	s := memblob.New()
	_, dir := mountT(t, testOptions(t, s))
	p := filepath.Join(dir, "new.txt")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// Created means visible at once: in the store, in stat, in ls.
	if _, err := s.Stat(context.Background(), "new.txt"); err != nil {
		t.Errorf("created file not in store: %v", err)
	}
	if _, err := f.Write([]byte("hello, world")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 12 {
		t.Errorf("stat while open: %v %v, want size 12", fi, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "new.txt" {
		t.Errorf("ls while open: %v %v", ents, err)
	}
	if info, _ := ents[0].Info(); info == nil || info.Size() != 12 {
		t.Errorf("ls -l while open: %v", info)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "new.txt"); string(got) != "hello, world" {
		t.Errorf("blob after close = %q", got)
	}
	// O_EXCL on an existing name.
	_, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	wantErrno(t, "O_EXCL on existing", err, syscall.EEXIST)
	// O_TRUNC replaces the content.
	if err := os.WriteFile(p, []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "new.txt"); string(got) != "short" {
		t.Errorf("after O_TRUNC rewrite: %q", got)
	}
	// Open O_TRUNC and close without writing: an empty file.
	f, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "new.txt"); len(got) != 0 {
		t.Errorf("after bare O_TRUNC: %q", got)
	}
}

func TestMountAppendAndOverwriteExisting(t *testing.T) {
	s := memblob.New()
	put(t, s, "log.txt", []byte("line1\n"))
	put(t, s, "patch.bin", []byte("AAAAAAAAAA"))
	_, dir := mountT(t, testOptions(t, s))

	f, err := os.OpenFile(filepath.Join(dir, "log.txt"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"line2\n", "line3\n"} {
		if _, err := f.WriteString(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "log.txt"); string(got) != "line1\nline2\nline3\n" {
		t.Errorf("appended: %q", got)
	}
	// A write in the middle keeps the rest (copy-on-write of the blob).
	f, err = os.OpenFile(filepath.Join(dir, "patch.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("bb"), 4); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "AAAAbbAAAA" {
		t.Errorf("read own write: %q %v", buf, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "patch.bin"); string(got) != "AAAAbbAAAA" {
		t.Errorf("patched: %q", got)
	}
}

func TestMountTruncate(t *testing.T) {
	s := memblob.New()
	put(t, s, "t", []byte("0123456789"))
	_, dir := mountT(t, testOptions(t, s))
	p := filepath.Join(dir, "t")

	if err := os.Truncate(p, 4); err != nil { // truncate(2): no handle
		t.Fatal(err)
	}
	if got := blobData(t, s, "t"); string(got) != "0123" {
		t.Errorf("after truncate(2) to 4: %q", got)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(6); err != nil { // ftruncate grows with zeros
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != 6 {
		t.Errorf("fstat after ftruncate: %d", fi.Size())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "t"); string(got) != "0123\x00\x00" {
		t.Errorf("after ftruncate to 6: %q", got)
	}
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 0 {
		t.Errorf("stat after truncate to 0: %v %v", fi, err)
	}
}

func TestMountFsyncIsDurableBeforeClose(t *testing.T) {
	s := memblob.New()
	_, dir := mountT(t, testOptions(t, s))
	f, err := os.Create(filepath.Join(dir, "ckpt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("epoch-1")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "ckpt"); string(got) != "epoch-1" {
		t.Errorf("after fsync: %q", got)
	}
	if _, err := f.Write([]byte("+more")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "ckpt"); string(got) != "epoch-1+more" {
		t.Errorf("after close: %q", got)
	}
}

func TestMountUnlinkMkdirRmdir(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	put(t, s, "only/file", []byte("x"))
	put(t, s, "full/a", []byte("a"))
	_, dir := mountT(t, testOptions(t, s))

	// mkdir writes a BlobFuse2-style marker.
	if err := os.Mkdir(filepath.Join(dir, "made"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := s.Stat(ctx, "made")
	if err != nil || !a.IsDirMarker() || a.Size != 0 {
		t.Errorf("marker: %+v %v", a, err)
	}
	wantErrno(t, "mkdir existing", os.Mkdir(filepath.Join(dir, "made"), 0o755), syscall.EEXIST)
	if err := os.MkdirAll(filepath.Join(dir, "made/x/y"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "made/x/y/f"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "rmdir non-empty", syscall.Rmdir(filepath.Join(dir, "full")), syscall.ENOTEMPTY)
	wantErrno(t, "unlink a directory", syscall.Unlink(filepath.Join(dir, "full")), syscall.EISDIR)
	wantErrno(t, "unlink missing", syscall.Unlink(filepath.Join(dir, "missing")), syscall.ENOENT)
	wantErrno(t, "rmdir a file", syscall.Rmdir(filepath.Join(dir, "full/a")), syscall.ENOTDIR)

	// rm -r of an explicit tree removes every blob, markers included.
	if err := os.RemoveAll(filepath.Join(dir, "made")); err != nil {
		t.Fatal(err)
	}
	page, _ := s.List(ctx, blob.ListOptions{Prefix: "made"})
	if len(page.Blobs) != 0 {
		t.Errorf("left after rm -r: %v", page.Blobs)
	}
	if _, err := os.Stat(filepath.Join(dir, "made")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat removed dir: %v", err)
	}

	// An implicit directory vanishes with its last file (BlobFuse2 does
	// the same), and rmdir of it afterwards still succeeds.
	if err := os.Remove(filepath.Join(dir, "only/file")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() == "only" {
			t.Errorf("implicit dir still listed after its last file went")
		}
	}
	if err := syscall.Rmdir(filepath.Join(dir, "only")); err != nil && !errors.Is(err, syscall.ENOENT) {
		t.Errorf("rmdir of vanished implicit dir: %v", err)
	}
}

func TestMountRenameFile(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	put(t, s, "a", []byte("A"))
	put(t, s, "x", []byte("old x"))
	_, dir := mountT(t, testOptions(t, s))
	p := func(n string) string { return filepath.Join(dir, n) }

	if err := os.Rename(p("a"), p("sub-b")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "a"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("source still there: %v", err)
	}
	if got := blobData(t, s, "sub-b"); string(got) != "A" {
		t.Errorf("renamed content: %q", got)
	}
	if err := os.Mkdir(p("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p("sub-b"), p("d/b")); err != nil { // across directories
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p("d/b")); err != nil || string(got) != "A" {
		t.Errorf("read after cross-dir rename: %q %v", got, err)
	}

	// PyTorch/HF: write x.tmp, then os.replace(x.tmp, x). A reader that
	// opened x before keeps reading the version it opened.
	r, err := os.Open(p("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := os.WriteFile(p("x.tmp"), []byte("new x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p("x.tmp"), p("x")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p("x")); err != nil || string(got) != "new x" {
		t.Errorf("x after replace: %q %v", got, err)
	}
	if _, err := os.Stat(p("x.tmp")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("x.tmp after replace: %v", err)
	}
	buf := make([]byte, 5)
	_, err = r.ReadAt(buf, 0)
	// The old version is gone from the store: the pinned reader must not
	// see a mix, so it either still has the old bytes cached or ESTALE.
	if err == nil && string(buf) != "old x" {
		t.Errorf("reader opened before the replace read %q", buf)
	} else if err != nil {
		wantErrno(t, "reader of replaced file", err, syscall.ESTALE)
	}

	// RENAME_NOREPLACE: refused when the target exists, even if this
	// mount has not seen it yet.
	if _, err := os.Stat(p("late")); !errors.Is(err, syscall.ENOENT) {
		t.Fatal(err)
	}
	put(t, s, "late", []byte("someone else's"))
	time.Sleep(10 * time.Millisecond)
	err = unix.Renameat2(unix.AT_FDCWD, p("x"), unix.AT_FDCWD, p("late"), unix.RENAME_NOREPLACE)
	wantErrno(t, "RENAME_NOREPLACE onto existing", err, syscall.EEXIST)
	if got := blobData(t, s, "late"); string(got) != "someone else's" {
		t.Errorf("NOREPLACE clobbered the target: %q", got)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, p("x"), unix.AT_FDCWD, p("y"), unix.RENAME_NOREPLACE); err != nil {
		t.Errorf("RENAME_NOREPLACE onto a free name: %v", err)
	}
	err = unix.Renameat2(unix.AT_FDCWD, p("y"), unix.AT_FDCWD, p("d/b"), unix.RENAME_EXCHANGE)
	wantErrno(t, "RENAME_EXCHANGE", err, syscall.EINVAL)
	// syscall.Rename: os.Rename refuses a directory target itself.
	wantErrno(t, "rename file over dir", syscall.Rename(p("y"), p("d")), syscall.EISDIR)
}

func TestMountRenameWhileOpenAndDirty(t *testing.T) {
	s := memblob.New()
	_, dir := mountT(t, testOptions(t, s))
	f, err := os.Create(filepath.Join(dir, "part.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("first half,")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "part.tmp"), filepath.Join(dir, "final")); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "final"); string(got) != "first half," {
		t.Errorf("renamed dirty file uploaded as %q", got)
	}
	if _, err := f.Write([]byte(" second half")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "final"); string(got) != "first half, second half" {
		t.Errorf("after close: %q", got)
	}
	if _, err := s.Stat(context.Background(), "part.tmp"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("old name still in store: %v", err)
	}
}

func TestMountRenameDirectory(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	put(t, s, "src/a", []byte("a"))
	put(t, s, "src/sub/b", []byte("b"))
	put(t, s, "busy/c", []byte("c"))
	_, dir := mountT(t, testOptions(t, s))
	p := func(n string) string { return filepath.Join(dir, n) }
	if err := os.Mkdir(p("src/made"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p("src"), p("dst")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"dst/a": "a", "dst/sub/b": "b"} {
		if got, err := os.ReadFile(p(name)); err != nil || string(got) != want {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if fi, err := os.Stat(p("dst/made")); err != nil || !fi.IsDir() {
		t.Errorf("moved marker dir: %v %v", fi, err)
	}
	page, _ := s.List(ctx, blob.ListOptions{Prefix: "src"})
	if len(page.Blobs) != 0 {
		t.Errorf("left under src: %v", page.Blobs)
	}
	_, err := os.Stat(p("src"))
	wantErrno(t, "stat old dir", err, syscall.ENOENT)
	wantErrno(t, "rename dir over non-empty dir", syscall.Rename(p("dst"), p("busy")), syscall.ENOTEMPTY)
	if err := os.Mkdir(p("vacant"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Rename(p("dst"), p("vacant")); err != nil {
		t.Errorf("rename dir over empty dir: %v", err)
	}
	if got, err := os.ReadFile(p("vacant/sub/b")); err != nil || string(got) != "b" {
		t.Errorf("after rename over empty dir: %q %v", got, err)
	}
}

func TestMountStatfs(t *testing.T) {
	opts := testOptions(t, memblob.New())
	opts.StatfsDir = opts.StagingDir
	_, dir := mountT(t, opts)
	var got, want unix.Statfs_t
	if err := unix.Statfs(dir, &got); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(opts.StatfsDir, &want); err != nil {
		t.Fatal(err)
	}
	if got.Blocks != want.Blocks || got.Bsize != want.Bsize || got.Blocks == 0 {
		t.Errorf("statfs = %d blocks of %d, want %d of %d (the staging disk)", got.Blocks, got.Bsize, want.Blocks, want.Bsize)
	}
	if got.Namelen != 255 {
		t.Errorf("namelen = %d, want 255", got.Namelen)
	}
}

func TestMountReadOnly(t *testing.T) {
	s := memblob.New()
	put(t, s, "f", []byte("data"))
	put(t, s, "d/x", []byte("x"))
	opts := testOptions(t, s)
	opts.ReadOnly = true
	_, dir := mountT(t, opts)
	p := func(n string) string { return filepath.Join(dir, n) }
	if got, err := os.ReadFile(p("f")); err != nil || string(got) != "data" {
		t.Fatalf("read on ro mount: %q %v", got, err)
	}
	_, err := os.Create(p("new"))
	wantErrno(t, "create", err, syscall.EROFS)
	_, err = os.OpenFile(p("f"), os.O_WRONLY, 0)
	wantErrno(t, "open for write", err, syscall.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(p("e"), 0o755), syscall.EROFS)
	wantErrno(t, "unlink", os.Remove(p("f")), syscall.EROFS)
	wantErrno(t, "rmdir", syscall.Rmdir(p("d")), syscall.EROFS)
	wantErrno(t, "rename", os.Rename(p("f"), p("g")), syscall.EROFS)
	wantErrno(t, "truncate", os.Truncate(p("f"), 0), syscall.EROFS)
	wantErrno(t, "chmod", os.Chmod(p("f"), 0o600), syscall.EROFS)
	if got := blobData(t, s, "f"); string(got) != "data" {
		t.Errorf("ro mount changed f: %q", got)
	}
}

func TestMountErrorMapping(t *testing.T) {
	s := &faultStore{Store: memblob.New()}
	put(t, s.Store, "f", []byte("data"))
	opts := testOptions(t, s)
	// No listing cache: a directory warm-up (dirwarm.go) that lands
	// between two faults would answer the later lookups from a listing.
	opts.DirListTTL = 0
	_, dir := mountT(t, opts)
	p := func(n string) string { return filepath.Join(dir, n) }

	s.arm(blob.ErrPermission)
	_, err := os.Stat(p("denied"))
	wantErrno(t, "stat with ErrPermission", err, syscall.EACCES)
	_, err = os.ReadDir(p(""))
	wantErrno(t, "readdir with ErrPermission", err, syscall.EACCES)

	s.arm(nil)
	f, err := os.Open(p("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.arm(fmt.Errorf("after 4 attempts: %w", blob.ErrThrottled))
	_, err = f.Read(make([]byte, 4))
	wantErrno(t, "read with ErrThrottled", err, syscall.EIO)
	_, err = os.Create(p("throttled"))
	wantErrno(t, "create with ErrThrottled", err, syscall.EIO)

	s.arm(blob.ErrContainerNotFound)
	_, err = os.Stat(p("gone"))
	wantErrno(t, "stat with the container deleted", err, syscall.ENODEV)

	s.arm(errors.New("something nobody expected"))
	_, err = os.Stat(p("odd"))
	wantErrno(t, "stat with an unknown error", err, syscall.EIO)
	s.arm(nil)
	if got, err := f.Read(make([]byte, 4)); err != nil || got != 4 {
		t.Errorf("read after the faults cleared: %d %v", got, err)
	}
}

func TestMountMissingContainerFails(t *testing.T) {
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	_, err := Mount(context.Background(), dir, testOptions(t, memblob.NewMissing()))
	if !errors.Is(err, blob.ErrContainerNotFound) {
		t.Fatalf("Mount of a missing container: %v, want ErrContainerNotFound", err)
	}
	if mounted(t, dir) {
		t.Fatalf("failed Mount left %s mounted", dir)
	}
}

func TestMountLargeFileRoundTrip(t *testing.T) {
	s := &countingStore{Store: memblob.New()}
	opts := testOptions(t, s)
	opts.BlockSize = 4 << 20 // several blocks, staged in parallel
	_, dir := mountT(t, opts)
	size := testenv.Pick(24<<20, 96<<20) + 12345
	data := randomBytes(1, size)
	p := filepath.Join(dir, "big.bin")

	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for off := 0; off < size; off += 1 << 20 {
		if _, err := f.Write(data[off:min(off+1<<20, size)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d MiB in %v (%.0f MB/s)", size>>20, time.Since(start), float64(size)/time.Since(start).Seconds()/1e6)
	if got := blobData(t, s.Store, "big.bin"); !bytes.Equal(got, data) {
		t.Fatalf("blob differs from what was written (%d vs %d bytes)", len(got), len(data))
	}
	blocks, err := s.Blocks(context.Background(), "big.bin")
	if want := (size + 4<<20 - 1) / (4 << 20); err != nil || len(blocks) != want {
		t.Errorf("committed %d blocks (%v), want %d", len(blocks), err, want)
	}

	f, err = os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start = time.Now()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("sequential read: %d bytes, %v", len(got), err)
	}
	t.Logf("sequential read %d MiB through the mount in %v (%.0f MB/s, %d store reads)",
		size>>20, time.Since(start), float64(size)/time.Since(start).Seconds()/1e6, s.reads.Load())
	r := rand.New(rand.NewPCG(2, 3))
	for range 200 {
		off := r.IntN(size)
		n := min(1+r.IntN(300<<10), size-off)
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, int64(off)); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
		}
		if !bytes.Equal(buf, data[off:off+n]) {
			t.Fatalf("ReadAt(%d, %d) returned wrong bytes", off, n)
		}
	}
}

func TestMountSmallReadOfBigBlobIsRanged(t *testing.T) {
	s := &countingStore{Store: memblob.New()}
	size := 64 << 20
	data := randomBytes(4, size)
	put(t, s.Store, "huge", data)
	_, dir := mountT(t, testOptions(t, s))
	f, err := os.Open(filepath.Join(dir, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 100)
	off := int64(40 << 20)
	if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+100]) {
		t.Fatalf("ReadAt: %v", err)
	}
	// Kernel readahead may round the read up, but nowhere near the blob.
	if got := s.bytes.Load(); got > 4<<20+DefaultMaxWrite {
		t.Errorf("a 100-byte read transferred %d bytes of a %d-byte blob", got, size)
	}
	t.Logf("100-byte read transferred %d bytes in %d store reads", s.bytes.Load(), s.reads.Load())
}

func TestMountConcurrentReaders(t *testing.T) {
	s := memblob.New()
	size := 16 << 20
	data := randomBytes(5, size)
	put(t, s, "shard.tar", data)
	_, dir := mountT(t, testOptions(t, s))
	p := filepath.Join(dir, "shard.tar")
	shared, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			f := shared
			if w%2 == 0 { // half open their own descriptor, like DataLoader workers
				own, err := os.Open(p)
				if err != nil {
					errs <- err
					return
				}
				defer own.Close()
				f = own
			}
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for range 50 {
				off := r.IntN(size)
				n := min(1+r.IntN(256<<10), size-off)
				buf := make([]byte, n)
				if _, err := f.ReadAt(buf, int64(off)); err != nil {
					errs <- fmt.Errorf("worker %d ReadAt(%d,%d): %w", w, off, n, err)
					return
				}
				if !bytes.Equal(buf, data[off:off+n]) {
					errs <- fmt.Errorf("worker %d ReadAt(%d,%d): wrong bytes", w, off, n)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMountReaddirManyEntries(t *testing.T) {
	inner := memblob.New()
	n := testenv.Pick(20_000, 100_000)
	ctx := context.Background()
	for i := range n {
		if _, err := inner.Put(ctx, fmt.Sprintf("many/f%06d", i), []byte("x"), blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s := &statCounter{Store: inner}
	_, dir := mountT(t, testOptions(t, s))

	start := time.Now()
	ents, err := os.ReadDir(filepath.Join(dir, "many"))
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if len(ents) != n {
		t.Fatalf("ReadDir returned %d entries, want %d", len(ents), n)
	}
	if ents[0].Name() != "f000000" || ents[n-1].Name() != fmt.Sprintf("f%06d", n-1) {
		t.Errorf("first/last = %s/%s", ents[0].Name(), ents[n-1].Name())
	}
	statsBefore := s.stats.Load()
	start = time.Now()
	for _, e := range ents { // ls -l
		fi, err := e.Info()
		if err != nil || fi.Size() != 1 {
			t.Fatalf("lstat %s: %v %v", e.Name(), fi, err)
		}
	}
	t.Logf("readdir of %d entries: %v (%d List pages); ls -l stat pass: %v with %d store Stats",
		n, took, s.lists.Load(), time.Since(start), s.stats.Load()-statsBefore)
	if extra := s.stats.Load() - statsBefore; extra > 10 {
		t.Errorf("ls -l after readdir made %d store Stat calls; attributes should come from the listing", extra)
	}
}

// statCounter counts Stat and List calls; with pageSize, listings come in
// pages of that many entries.
type statCounter struct {
	blob.Store
	pageSize     int
	listDelay    time.Duration // each listing page takes this long
	stats, lists atomic.Int64
}

func (s *statCounter) Stat(ctx context.Context, name string) (blob.Attrs, error) {
	s.stats.Add(1)
	return s.Store.Stat(ctx, name)
}

func (s *statCounter) List(ctx context.Context, opts blob.ListOptions) (blob.Page, error) {
	s.lists.Add(1)
	time.Sleep(s.listDelay)
	if opts.MaxResults == 0 {
		opts.MaxResults = s.pageSize
	}
	return s.Store.List(ctx, opts)
}

func TestMountFSTest(t *testing.T) {
	s := memblob.New()
	files := map[string]string{
		"a.txt":             "alpha",
		"dir/b.txt":         "bravo",
		"dir/sub/c.txt":     strings.Repeat("charlie", 1000),
		"dir/sub/empty.bin": "",
		"z/y/x/w.txt":       "deep",
	}
	for name, content := range files {
		put(t, s, name, []byte(content))
	}
	_, dir := mountT(t, testOptions(t, s))
	if err := os.Mkdir(filepath.Join(dir, "made"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "made/new.txt"), []byte("written through the mount"), 0o644); err != nil {
		t.Fatal(err)
	}
	expected := slices.Sorted(func(yield func(string) bool) {
		for name := range files {
			if !yield(name) {
				return
			}
		}
	})
	expected = append(expected, "made/new.txt")
	if err := fstest.TestFS(os.DirFS(dir), expected...); err != nil {
		t.Fatal(err)
	}
}

// TestMountTrainingPatterns checks, without Python, the system calls that
// PyTorch, Hugging Face and friends make.
func TestMountTrainingPatterns(t *testing.T) {
	s := memblob.New()
	put(t, s, "weights.safetensors", randomBytes(6, 3<<20))
	_, dir := mountT(t, testOptions(t, s))
	p := func(n string) string { return filepath.Join(dir, n) }

	// os.makedirs(..., exist_ok=True), twice.
	for range 2 {
		if err := os.MkdirAll(p("runs/exp1/checkpoints"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// torch.save to a temp name, fsync, os.replace onto the final name,
	// then fsync the directory.
	for epoch := range 3 {
		tmp, final := p("runs/exp1/checkpoints/.last.pt.tmp"), p("runs/exp1/checkpoints/last.pt")
		content := []byte(fmt.Sprintf("checkpoint %d", epoch))
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(content); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, final); err != nil {
			t.Fatal(err)
		}
		d, err := os.Open(p("runs/exp1/checkpoints"))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Errorf("fsync(dir): %v", err)
		}
		d.Close()
		if got, err := os.ReadFile(final); err != nil || !bytes.Equal(got, content) {
			t.Errorf("epoch %d: %q %v", epoch, got, err)
		}
	}
	// huggingface_hub resumes a download by appending to .incomplete.
	inc := p("blobs.incomplete")
	if err := os.WriteFile(inc, []byte("part1-"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(inc, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("part2")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(inc, p("blob")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p("blob")); string(got) != "part1-part2" {
		t.Errorf("resumed download: %q", got)
	}
	// safetensors / torch.load(mmap=True) map the file read-only. The
	// faulting read runs in a child process: a page fault on our own
	// mount from this process can deadlock with the Go GC (the faulting
	// thread cannot reach a safe point while the server goroutine that
	// must answer it waits for stop-the-world).
	mmapCheck(t, p("weights.safetensors"), 1<<20, randomBytes(6, 3<<20)[1<<20:1<<20+4096])
	// shutil.copyfile: copy_file_range / sendfile between two mount files.
	src, _ := os.Open(p("weights.safetensors"))
	dst, err := os.Create(p("copy.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatalf("copy within the mount: %v", err)
	}
	src.Close()
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if got := blobData(t, s, "copy.safetensors"); !bytes.Equal(got, randomBytes(6, 3<<20)) {
		t.Error("copied file differs")
	}
	// shutil.disk_usage / datasets' free-space check.
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Bavail == 0 {
		t.Errorf("statfs: %v, %d blocks available", err, st.Bavail)
	}
	// chmod/chown/utime (shutil.copy2, cp -a) are accepted no-ops.
	if err := os.Chmod(p("blob"), 0o600); err != nil {
		t.Errorf("chmod: %v", err)
	}
	if err := os.Chtimes(p("blob"), time.Now(), time.Now()); err != nil {
		t.Errorf("utimes: %v", err)
	}
	if fi, _ := os.Stat(p("blob")); fi.Mode().Perm() != 0o644 {
		t.Errorf("chmod changed the reported mode to %v", fi.Mode())
	}
	// xattrs: not supported, and saying so breaks nothing.
	_, err = unix.Getxattr(p("blob"), "user.test", make([]byte, 64))
	wantErrno(t, "getxattr", err, syscall.ENOTSUP)
	_, err = unix.Listxattr(p("blob"), make([]byte, 64))
	wantErrno(t, "listxattr", err, syscall.ENOTSUP)
	wantErrno(t, "setxattr", unix.Setxattr(p("blob"), "user.test", []byte("v"), 0), syscall.ENOTSUP)
	// A second descriptor sees the first one's unsaved writes.
	w, err := os.Create(p("shared"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("visible before close"))
	if got, err := os.ReadFile(p("shared")); err != nil || string(got) != "visible before close" {
		t.Errorf("read of a file open for writing: %q %v", got, err)
	}
	w.Close()
}

func TestMountStaleReadIsESTALE(t *testing.T) {
	s := memblob.New()
	put(t, s, "v", bytes.Repeat([]byte("1"), 1<<20))
	_, dir := mountT(t, testOptions(t, s))
	f, err := os.Open(filepath.Join(dir, "v"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	put(t, s, "v", bytes.Repeat([]byte("2"), 1<<20)) // replaced by another writer
	_, err = f.ReadAt(make([]byte, 10), 900<<10)     // not yet in the page cache
	wantErrno(t, "read after the blob changed", err, syscall.ESTALE)
}

func TestMountNames(t *testing.T) {
	inner := memblob.New()
	put(t, inner, "ok/file", []byte("1"))
	put(t, inner, "weird/"+strings.Repeat("L", 300), []byte("4"))
	put(t, inner, "placeholder/", nil) // a directory placeholder from another tool
	// Names memblob refuses but the service lists (other tools write them).
	s := &extraListing{Store: inner, prefix: "weird/", blobs: []blob.Attrs{
		{Name: "weird/bad/slash", Size: 1}, // a broken listing must not reach the kernel
	}, prefixes: []string{"weird//", "weird/./", "weird/../"}}
	_, dir := mountT(t, testOptions(t, s))

	ents, err := os.ReadDir(filepath.Join(dir, "weird"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("unreachable blob names shown: %v", ents)
	}
	if fi, err := os.Stat(filepath.Join(dir, "placeholder")); err != nil || !fi.IsDir() {
		t.Errorf("placeholder dir: %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "placeholder")); len(ents) != 0 {
		t.Errorf("placeholder dir lists itself: %v", ents)
	}
	_, err = os.Create(filepath.Join(dir, strings.Repeat("n", 256)))
	wantErrno(t, "create 256-byte name", err, syscall.ENAMETOOLONG)
	deep := dir
	for i := range 4 {
		deep = filepath.Join(deep, fmt.Sprintf("%d%s", i, strings.Repeat("d", 250)))
		if err := os.Mkdir(deep, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err = os.Create(filepath.Join(deep, strings.Repeat("f", 30))) // 4*252+30 > 1024
	wantErrno(t, "create beyond 1024 characters", err, syscall.ENAMETOOLONG)
	_, err = os.Create(filepath.Join(dir, "bad\xffname"))
	wantErrno(t, "create non-UTF-8 name", err, syscall.EINVAL)
}

func TestMountUnmountWithOpenFile(t *testing.T) {
	testenv.RequireFUSE(t)
	s := memblob.New()
	put(t, s, "f", []byte("x"))
	dir := t.TempDir()
	m, err := Mount(context.Background(), dir, testOptions(t, s))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "f"))
	if err != nil {
		m.Unmount(context.Background())
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := m.Unmount(ctx); err == nil {
		t.Errorf("Unmount with a file open succeeded")
	}
	f.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if err := m.Unmount(ctx2); err != nil {
		t.Fatalf("Unmount after close: %v", err)
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if mounted(t, m.Dir()) {
		t.Errorf("still mounted")
	}
}

// extraListing adds blobs and prefixes to the listing of one prefix.
type extraListing struct {
	blob.Store
	prefix   string
	blobs    []blob.Attrs
	prefixes []string
}

func (e *extraListing) List(ctx context.Context, opts blob.ListOptions) (blob.Page, error) {
	page, err := e.Store.List(ctx, opts)
	if err == nil && opts.Prefix == e.prefix && opts.Delimiter == "/" && opts.Marker == "" {
		page.Blobs = append(page.Blobs, e.blobs...)
		page.Prefixes = append(page.Prefixes, e.prefixes...)
	}
	return page, err
}

// mmapHelperEnv makes the test binary act as the mmap reader for
// mmapCheck instead of running tests.
const mmapHelperEnv = "BLOBFS_TEST_MMAP_HELPER"

// mmapCheck maps path in a child process and checks len(want) bytes at off.
func mmapCheck(t *testing.T, path string, off int, want []byte) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestMmapHelper$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d", mmapHelperEnv, path, off, len(want)))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mmap helper: %v", err)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, fmt.Sprintf("%x", sha256.Sum256(want))) {
		t.Errorf("mmap read wrong bytes: helper said %q", got)
	}
}

// TestMmapHelper is the child side of mmapCheck; it does nothing in a
// normal test run.
func TestMmapHelper(t *testing.T) {
	spec := os.Getenv(mmapHelperEnv)
	if spec == "" {
		t.Skip("helper process for mmapCheck only")
	}
	var path string
	var off, n int
	i := strings.LastIndexByte(spec, ':')
	j := strings.LastIndexByte(spec[:i], ':')
	path = spec[:j]
	fmt.Sscan(spec[j+1:i], &off)
	fmt.Sscan(spec[i+1:], &n)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, off+n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	fmt.Printf("%x\n", sha256.Sum256(m[off:off+n]))
}

// TestMountSymlinks: huggingface_hub's cache links snapshots/<rev>/<file>
// to ../../blobs/<sha>; links are stored as BlobFuse2 stores them.
func TestMountSymlinks(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	put(t, s, "hub/blobs/abc123", []byte(`{"hidden_size": 4096}`))
	if _, err := s.Put(ctx, "hub/by-blobfuse2", []byte("blobs/abc123"), blob.WriteOptions{Metadata: map[string]string{"is_symlink": "true"}}); err != nil {
		t.Fatal(err)
	}
	_, dir := mountT(t, testOptions(t, s))
	p := func(n string) string { return filepath.Join(dir, n) }
	if err := os.MkdirAll(p("hub/snapshots/main"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../blobs/abc123", p("hub/snapshots/main/config.json")); err != nil {
		t.Fatal(err)
	}
	a, err := s.Stat(ctx, "hub/snapshots/main/config.json")
	if err != nil || a.Metadata["is_symlink"] != "true" {
		t.Errorf("symlink blob: %+v %v", a, err)
	}
	if got := blobData(t, s, "hub/snapshots/main/config.json"); string(got) != "../../blobs/abc123" {
		t.Errorf("symlink blob content %q", got)
	}
	for _, link := range []string{"hub/snapshots/main/config.json", "hub/by-blobfuse2"} {
		fi, err := os.Lstat(p(link))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("lstat %s: %v %v", link, fi, err)
		}
		if got, err := os.ReadFile(p(link)); err != nil || string(got) != `{"hidden_size": 4096}` {
			t.Errorf("read through %s: %q %v", link, got, err)
		}
	}
	if target, err := os.Readlink(p("hub/by-blobfuse2")); err != nil || target != "blobs/abc123" {
		t.Errorf("readlink: %q %v", target, err)
	}
	ents, err := os.ReadDir(p("hub/snapshots/main"))
	if err != nil || len(ents) != 1 || ents[0].Type() != os.ModeSymlink {
		t.Errorf("readdir of links: %v %v", ents, err)
	}
	wantErrno(t, "symlink over existing", os.Symlink("x", p("hub/by-blobfuse2")), syscall.EEXIST)
	if err := os.Rename(p("hub/by-blobfuse2"), p("hub/moved")); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(p("hub/moved")); err != nil || target != "blobs/abc123" {
		t.Errorf("readlink after rename: %q %v", target, err)
	}
	if err := os.Remove(p("hub/moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "hub/blobs/abc123"); err != nil {
		t.Errorf("removing a link removed its target: %v", err)
	}
}

func TestMountOptionsReachTheKernel(t *testing.T) {
	opts := testOptions(t, memblob.New())
	opts.ReadOnly = true
	_, dir := mountT(t, opts)
	f, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.SplitSeq(string(f), "\n") {
		if fields := strings.Fields(l); len(fields) > 4 && fields[4] == dir {
			line = l
		}
	}
	for _, want := range []string{" ro,", "fuse.blobfs", "default_permissions", "max_read=1048576"} {
		if !strings.Contains(line, want) {
			t.Errorf("mountinfo line lacks %q: %s", want, line)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	ra, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil || strings.TrimSpace(string(ra)) != fmt.Sprint(DefaultReadAheadKB) {
		t.Errorf("read_ahead_kb = %q, %v; want %d", ra, err, DefaultReadAheadKB)
	}
}

// TestMountWithCoreutils runs the tools people point at a mount, each in
// its own process, as users do.
func TestMountWithCoreutils(t *testing.T) {
	s := memblob.New()
	put(t, s, "src/a.txt", []byte("alpha\n"))
	put(t, s, "src/deep/b.bin", randomBytes(7, 300<<10))
	_, dir := mountT(t, testOptions(t, s))
	run := func(name string, args ...string) string {
		t.Helper()
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("%s not installed", name)
		}
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	if out := run("ls", "-la", p("src")); !strings.Contains(out, "a.txt") || !strings.Contains(out, "deep") {
		t.Errorf("ls -la:\n%s", out)
	}
	if out := run("stat", "-c", "%s %F %a", p("src/a.txt")); strings.TrimSpace(out) != "6 regular file 644" {
		t.Errorf("stat: %q", out)
	}
	run("cp", "-a", p("src"), p("copy"))
	if got := blobData(t, s, "copy/deep/b.bin"); !bytes.Equal(got, randomBytes(7, 300<<10)) {
		t.Error("cp -a copied wrong bytes")
	}
	if out := run("find", p("copy"), "-type", "f"); strings.Count(out, "\n") != 2 {
		t.Errorf("find:\n%s", out)
	}
	run("du", "-sh", p("copy"))
	run("df", "-h", dir)
	local := t.TempDir()
	run("tar", "-C", dir, "-cf", filepath.Join(local, "x.tar"), "copy")
	run("tar", "-C", p("src"), "-xf", filepath.Join(local, "x.tar"))
	if got, err := os.ReadFile(p("src/copy/a.txt")); err != nil || string(got) != "alpha\n" {
		t.Errorf("untarred: %q %v", got, err)
	}
	run("mv", p("copy"), p("moved"))
	run("rm", "-rf", p("moved"), p("src/copy"))
	if out := run("ls", "-A", dir); strings.TrimSpace(out) != "src" {
		t.Errorf("after rm -rf: %q", out)
	}
}

// TestMountUploadErrorsSurface: a failed upload fails fsync and close; the
// data stays local, so a retry after the fault clears succeeds.
func TestMountUploadErrorsSurface(t *testing.T) {
	s := &faultStore{Store: memblob.New()}
	_, dir := mountT(t, testOptions(t, s))
	f, err := os.Create(filepath.Join(dir, "ckpt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("precious")); err != nil {
		t.Fatal(err)
	}
	s.arm(fmt.Errorf("gave up: %w", blob.ErrThrottled))
	wantErrno(t, "fsync during an outage", f.Sync(), syscall.EIO)
	s.arm(nil)
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after the outage: %v", err)
	}
	if got := blobData(t, s.Store, "ckpt"); string(got) != "precious" {
		t.Errorf("after retried fsync: %q", got)
	}
	if _, err := f.Write([]byte(" and more")); err != nil {
		t.Fatal(err)
	}
	s.arm(blob.ErrPermission)
	wantErrno(t, "close during an outage", f.Close(), syscall.EACCES)
	s.arm(nil)
	if got := blobData(t, s.Store, "ckpt"); string(got) != "precious" {
		t.Errorf("a failed close changed the blob: %q", got)
	}
}

// TestMountConcurrentMutations races creates, writes, renames, unlinks and
// listings through the kernel, then checks that the mount and the store
// agree on what exists.
func TestMountConcurrentMutations(t *testing.T) {
	s := memblob.New()
	_, dir := mountT(t, testOptions(t, s))
	for _, d := range []string{"x", "y"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	names := []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c"}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for range 60 {
				p := filepath.Join(dir, names[r.IntN(len(names))])
				switch r.IntN(6) {
				case 0, 1:
					os.WriteFile(p, bytes.Repeat([]byte{byte('a' + w)}, r.IntN(50000)), 0o644)
				case 2:
					os.Rename(p, filepath.Join(dir, names[r.IntN(len(names))]))
				case 3:
					os.Remove(p)
				case 4:
					os.ReadDir(filepath.Dir(p))
				case 5:
					// Concurrent O_TRUNC writers of one file share its
					// content, as on a local disk: no check of the bytes.
					os.ReadFile(p)
				}
			}
		})
	}
	wg.Wait()
	for _, d := range []string{"x", "y"} {
		ents, err := os.ReadDir(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		var mnt, store []string
		for _, e := range ents {
			mnt = append(mnt, e.Name())
			fi, _ := e.Info()
			if got := int64(len(blobData(t, s, d+"/"+e.Name()))); fi == nil || fi.Size() != got {
				t.Errorf("%s/%s: mount says %v, blob has %d bytes", d, e.Name(), fi, got)
			}
		}
		page, _ := s.List(context.Background(), blob.ListOptions{Prefix: d + "/", Delimiter: "/"})
		for _, b := range page.Blobs {
			store = append(store, strings.TrimPrefix(b.Name, d+"/"))
		}
		if !slices.Equal(mnt, store) {
			t.Errorf("%s: mount lists %v, store has %v", d, mnt, store)
		}
	}
}

// opCounter counts FUSE requests by opcode from go-fuse's debug trace
// ("rx <unique>: <OPCODE> ...").
type opCounter struct {
	mu sync.Mutex
	m  map[string]int // GUARDED_BY(mu)
}

func (c *opCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := bytes.Index(p, []byte("rx ")); i >= 0 {
		if f := strings.Fields(string(p[i:])); len(f) > 2 {
			c.m[f[2]]++
		}
	}
	return len(p), nil
}

func (c *opCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.m
	c.m = map[string]int{}
	return m
}

// TestMountRequestCounts pins down the round trips that matter at scale:
// one request per write(2) (no per-write xattr lookup), no FLUSH for
// read-only closes, and the page cache kept across opens of one version.
func TestMountRequestCounts(t *testing.T) {
	c := &opCounter{m: map[string]int{}}
	opts := testOptions(t, memblob.New())
	opts.Debug = true
	opts.Logger = slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, dir := mountT(t, opts)
	p := filepath.Join(dir, "x")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := f.Write(bytes.Repeat([]byte("a"), 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m := c.take()
	if m["WRITE"] != 100 || m["GETXATTR"] > 1 {
		t.Errorf("100 writes cost %v", m)
	}
	for range 100 {
		if _, err := os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	m = c.take()
	// The first open after the write reads the file (in one or a few
	// READs: the kernel may split it into readahead windows under load);
	// the other 99 must be served from the page cache kept across opens.
	if m["READ"] > 8 || m["FLUSH"] != 0 || m["OPEN"] != 100 {
		t.Errorf("100 open-read-close cost %v; want a few READs (not one per open), no FLUSH", m)
	}
}
