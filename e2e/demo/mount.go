package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dustin/go-humanize"

	"github.com/blobfs/blobfs/internal/azurite"
)

// The mount part of the demo: the seeded container through a real kernel
// FUSE mount of the real blobfs binary, read-only, listed like ls and
// read cold and warm. It needs root and /dev/fuse; without them the demo
// says so and skips it.

// mountSpec sizes and places the mount part.
type mountSpec struct {
	Enabled bool
	// Samples small files and one LargeMiB file are seeded for it.
	Samples  int
	LargeMiB int
	// Bin is the blobfs binary; empty means $BLOBFS_BIN, else go build.
	Bin string
}

// mountExtras are the files seeded for the mount part: a directory of
// small records, as a dataset of many small files looks, and one large
// checkpoint-sized file.
func mountExtras(spec mountSpec) (small []sampleFile, large sampleFile) {
	for i := range spec.Samples {
		rec := fmt.Sprintf("{\"id\": %d, \"label\": %d, \"pixels\": %q}\n", i, i%10, pseudoRandom(uint64(5000+i), 48+i%200))
		small = append(small, sampleFile{Name: fmt.Sprintf("datasets/records/rec-%05d.json", i), Data: []byte(rec)})
	}
	large = sampleFile{
		Name: fmt.Sprintf("checkpoints/checkpoint-200/model-%dMiB.bin", spec.LargeMiB),
		Data: pseudoRandom(9000, spec.LargeMiB<<20),
	}
	return small, large
}

// fuseUnavailable says why this machine cannot mount FUSE, or "". A
// variable so a test can play a machine without FUSE.
var fuseUnavailable = func() string {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "/dev/fuse is absent"
	}
	if os.Geteuid() != 0 {
		return "mounting needs root here (run it as root: sudo make demo)"
	}
	return ""
}

// blobfsBinary returns the binary to mount with: spec.Bin, $BLOBFS_BIN
// (make demo passes the one it just built), or one built now into tmp.
func blobfsBinary(ctx context.Context, w io.Writer, spec mountSpec, tmp string) (string, error) {
	bin := spec.Bin
	if bin == "" {
		bin = os.Getenv("BLOBFS_BIN")
	}
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("blobfs binary: %w", err)
		}
		return bin, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin = filepath.Join(tmp, "blobfs")
	fmt.Fprintf(w, "Building blobfs (set BLOBFS_BIN to use a built one)...\n")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/blobfs")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/blobfs: %w\n%s", err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot build blobfs: no go.mod above the current directory (set BLOBFS_BIN)")
		}
		dir = parent
	}
}

// demoMount is the mounted container.
type demoMount struct {
	bin, dir, log string
	env           []string
	pid           int
}

var daemonPID = regexp.MustCompile(`daemon pid (\d+)`)

// mountContainer mounts the container read-only with the real binary,
// credentials in the environment (never on the command line).
func mountContainer(ctx context.Context, w io.Writer, srv *azurite.Server, bin, tmp string) (*demoMount, error) {
	m := &demoMount{bin: bin, dir: filepath.Join(tmp, "mnt"), log: filepath.Join(tmp, "blobfs.log")}
	if err := os.Mkdir(m.dir, 0o755); err != nil {
		return nil, err
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZURE_") {
			m.env = append(m.env, kv)
		}
	}
	m.env = append(m.env, "AZURE_STORAGE_ACCOUNT="+srv.Account(), "AZURE_STORAGE_ACCESS_KEY="+srv.Key())
	args := []string{"mount", m.dir, "--container", demoContainer, "--endpoint", srv.BlobEndpoint(),
		"--read-only", "--cache-dir", filepath.Join(tmp, "cache"), "--log-file", m.log}
	fmt.Fprintf(w, "$ blobfs %s\n  (account and key from AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_ACCESS_KEY, never argv)\n", strings.Join(args, " "))
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = m.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("blobfs mount: %w\n%s%s", err, stderr.String(), readTail(m.log))
	}
	if sm := daemonPID.FindStringSubmatch(stdout.String()); sm != nil {
		m.pid, _ = strconv.Atoi(sm[1])
	}
	fmt.Fprintf(w, "%s  (ready in %.2fs)\n\n", strings.TrimSpace(stdout.String()), time.Since(t0).Seconds())
	return m, nil
}

// unmount runs `blobfs unmount` and waits for the daemon to exit; if that
// fails it detaches the mount (umount -l) so nothing is left behind.
func (m *demoMount) unmount(w io.Writer) error {
	out, err := exec.Command(m.bin, "unmount", m.dir).CombinedOutput()
	if err != nil {
		_ = exec.Command("umount", "-l", m.dir).Run()
		return fmt.Errorf("blobfs unmount: %w: %s", err, bytes.TrimSpace(out))
	}
	deadline := time.Now().Add(time.Minute)
	for m.pid > 0 && processAlive(m.pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("blobfs daemon pid %d still running a minute after unmount", m.pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(w, "Unmounted %s; the blobfs daemon exited.\n", m.dir)
	return nil
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "--- blobfs log ---\n" + string(b)
}

// runMount is the mount part: seed the extras, mount, list, read the
// large file cold then warm, verify every file, unmount.
func runMount(ctx context.Context, w io.Writer, srv *azurite.Server, seeded []sampleFile, spec mountSpec) (err error) {
	fmt.Fprintln(w, "--- The same container through a FUSE mount of the real blobfs binary ---")
	if why := fuseUnavailable(); why != "" {
		fmt.Fprintf(w, "Skipping the mount part: %s.\n", why)
		return nil
	}
	tmp, err := os.MkdirTemp("", "blobfs-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := blobfsBinary(ctx, w, spec, tmp)
	if err != nil {
		return err
	}

	small, large := mountExtras(spec)
	store, err := newDemoStore(srv)
	if err != nil {
		return err
	}
	extras := append(slices.Clone(small), large)
	st, err := seed(ctx, store, extras)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	fmt.Fprintf(w, "Seeded %d more blobs for it (%d small records, one %s file), %s, in %.2fs (%s/s)\n",
		st.Files, len(small), humanize.IBytes(uint64(len(large.Data))), humanize.IBytes(uint64(st.Bytes)), st.Elapsed.Seconds(), rate(st.Bytes, st.Elapsed))

	m, err := mountContainer(ctx, w, srv, bin, tmp)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := m.unmount(w); err == nil {
			err = uerr
		}
	}()

	all := append(slices.Clone(seeded), extras...)
	files, dirs, size, err := lsTree(w, m.dir)
	if err != nil {
		return fmt.Errorf("list through the mount: %w", err)
	}
	wantFiles := 0
	for _, f := range all {
		if !f.DirMarker {
			wantFiles++
		}
	}
	if files != wantFiles {
		return fmt.Errorf("the mount shows %d files, %d were seeded", files, wantFiles)
	}
	fmt.Fprintf(w, "Listed %d files in %d directories, %s, through the mount.\n\n", files, dirs, humanize.IBytes(uint64(size)))

	want := sha256.Sum256(large.Data)
	fmt.Fprintf(w, "Reading %s (%s) through the mount:\n", large.Name, humanize.IBytes(uint64(len(large.Data))))
	for _, pass := range []string{"cold (first read: from Azurite)", "warm (second read: from cache)"} {
		d, sum, err := readTimed(filepath.Join(m.dir, large.Name))
		if err != nil {
			return err
		}
		if sum != want {
			return fmt.Errorf("%s: SHA-256 %x through the mount, seeded %x", large.Name, sum, want)
		}
		fmt.Fprintf(w, "  %-32s %7.2fs  %8.1f MB/s  SHA-256 matches\n", pass, d.Seconds(), float64(len(large.Data))/1e6/d.Seconds())
	}

	t0 := time.Now()
	var n int
	var total int64
	for _, f := range all {
		if f.DirMarker || f.Name == large.Name {
			continue
		}
		got, err := os.ReadFile(filepath.Join(m.dir, f.Name))
		if err != nil {
			return err
		}
		if sha256.Sum256(got) != sha256.Sum256(f.Data) {
			return fmt.Errorf("%s: content through the mount differs from what was seeded", f.Name)
		}
		n++
		total += int64(len(got))
	}
	d := time.Since(t0)
	fmt.Fprintf(w, "Read the other %d files, %s, in %.2fs (%s/s): every SHA-256 matches what was seeded.\n",
		n, humanize.IBytes(uint64(total)), d.Seconds(), rate(total, d))
	return nil
}

// readTimed reads a whole file with 8 MiB reads, hashing it.
func readTimed(path string) (time.Duration, [32]byte, error) {
	var sum [32]byte
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, readChunk)); err != nil {
		return 0, sum, fmt.Errorf("read %s: %w", path, err)
	}
	d := time.Since(t0)
	copy(sum[:], h.Sum(nil))
	return d, sum, nil
}

// lsTreeShown is how many files of a large directory the listing prints
// before summing up the rest.
const lsTreeShown = 4

// lsTree prints the mount like `ls -lR` folded into a tree, from readdir
// and lstat through the kernel, and counts what it saw. Directories with
// many files show their first few and a summary line.
func lsTree(w io.Writer, root string) (files, dirs int, size int64, err error) {
	fmt.Fprintf(w, "$ ls -lR %s   (folded into a tree)\n", root)
	type item struct {
		fi      os.FileInfo
		summary *[2]int64 // files and bytes left out, for the summary line
	}
	var walk func(dir, indent string) error
	walk = func(dir, indent string) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		nfiles := 0
		for _, e := range ents {
			if !e.IsDir() {
				nfiles++
			}
		}
		var items []item
		var summary *[2]int64
		seen := 0
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			if e.IsDir() {
				dirs++
				items = append(items, item{fi: fi})
				continue
			}
			files++
			size += fi.Size()
			if seen++; nfiles > 2*lsTreeShown && seen > lsTreeShown {
				if summary == nil {
					summary = new([2]int64)
					items = append(items, item{summary: summary})
				}
				summary[0]++
				summary[1] += fi.Size()
				continue
			}
			items = append(items, item{fi: fi})
		}
		for i, it := range items {
			branch, next := "├── ", "│   "
			if i == len(items)-1 {
				branch, next = "└── ", "    "
			}
			switch {
			case it.summary != nil:
				fmt.Fprintf(w, "%s%s… and %d more files, %s\n", indent, branch, it.summary[0], humanize.IBytes(uint64(it.summary[1])))
			case it.fi.IsDir():
				fmt.Fprintf(w, "%s%s%s %s/\n", indent, branch, it.fi.Mode(), it.fi.Name())
				if err := walk(filepath.Join(dir, it.fi.Name()), indent+next); err != nil {
					return err
				}
			default:
				line := fmt.Sprintf("%s%s%s %s", indent, branch, it.fi.Mode(), it.fi.Name())
				pad := max(1, 64-utf8.RuneCountInString(line))
				fmt.Fprintf(w, "%s%*s\n", line, pad+9, humanize.IBytes(uint64(it.fi.Size())))
			}
		}
		return nil
	}
	err = walk(root, "")
	return files, dirs, size, err
}
