package mounte2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/control"
)

// The read-only prefetch tests: a pod's readOnly volumeMount is a
// read-only bind of the FUSE mount, and `blobfs mount --read-only` is
// read-only itself. Either refuses open(O_RDWR) of the control file with
// EROFS before FUSE sees it, so `blobfs prefetch` sends its request by
// ioctl on a read-only open (control.IoctlWriteCmd).

// readOnlyBind binds dir read-only at a new path, as kubelet does for a
// readOnly volumeMount (a bind, then a read-only remount of the bind),
// and unbinds it when the test ends (before the mount under it goes).
func readOnlyBind(t *testing.T, dir string) string {
	t.Helper()
	ro := filepath.Join(testDir(t, "pod"), "data")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, ro, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(ro, 0); err != nil {
			t.Errorf("unmount the bind %s: %v", ro, err)
			_ = unix.Unmount(ro, unix.MNT_DETACH)
		}
	})
	if err := unix.Mount("", ro, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount the bind read-only: %v", err)
	}
	return ro
}

// prefetchAsUser1000 runs `blobfs prefetch args...` as uid/gid 1000 with
// no supplementary groups: a non-root init container.
func prefetchAsUser1000(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, blobfsBin, append([]string{"prefetch", "--progress-interval", "100ms"}, args...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/tmp"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run blobfs prefetch as uid 1000: %v\n%s", err, r)
	}
	return r
}

// requireEROFS checks that dir is read-only the way the kernel enforces
// it: the control file's write transport is refused.
func requireEROFS(t *testing.T, dir string) {
	t.Helper()
	f, err := control.OpenFileWrite(dir)
	if err == nil {
		f.Close()
		t.Fatalf("read-write open of %s's control file succeeded: the mount is not read-only", dir)
	}
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("read-write open of %s's control file: %v, want EROFS", dir, err)
	}
}

// readUnder reads every named file under dir and compares it with want.
func readUnder(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("read %s: %d bytes differ from the %d seeded", name, len(got), len(data))
		}
	}
}

// longNames seeds n small files whose paths are long (three 200-byte
// directory names deep), so that a manifest of them is a request several
// ioctls long, and returns them by path.
func longNames(t *testing.T, put func(name string, data []byte), dir string, n int) map[string][]byte {
	t.Helper()
	seg := func(c byte) string { return strings.Repeat(string(c), 200) }
	files := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("%s/%s/%s/%s/f-%03d.bin", dir, seg('a'), seg('b'), seg('c'), i)
		data := pseudoRandom(uint64(700+i), 1000+i)
		put(name, data)
		files[name] = data
	}
	return files
}

// 1. A read-only bind of a mount, used by uid 1000 (a non-root init
// container with a readOnly volumeMount): prefetch of a file, of a
// manifest longer than one ioctl can carry, an exact --check, reads that
// cost no backend request, and Ctrl-C acknowledged by the mount (the
// cancel line goes by ioctl too).
func TestPrefetchReadOnlyBindAsUser1000(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	data := pseudoRandom(61, 3<<20+5)
	putBlob(t, s, "ds/x.bin", data, nil)
	putBlob(t, s, "ds/y.bin", data[:1000], nil)
	big := pseudoRandom(62, 16<<20) // 4 s at the 4 MB/s below: the interrupt lands mid-way
	putBlob(t, s, "slow/big.bin", big, nil)
	many := longNames(t, func(name string, data []byte) { putBlob(t, s, name, data, nil) }, "many", 60)
	m, proxy, _ := prefetchMount(t, c, "--allow-other")
	ro := readOnlyBind(t, m.Dir)
	requireEROFS(t, ro)

	r := prefetchAsUser1000(t, filepath.Join(ro, "ds/x.bin"))
	if r.code != 0 || !strings.Contains(r.stdout, "prefetched 1 of 1 files") {
		t.Fatalf("prefetch as uid 1000 through a read-only bind: %s\nlog:\n%s", r, tail(readFile(m.LogFile), 3000))
	}
	r = prefetchAsUser1000(t, "--check", filepath.Join(ro, "ds"))
	if r.code != 3 || !strings.Contains(r.stdout, "100.00%  3145733/3145733 bytes  ds/x.bin") || !strings.Contains(r.stdout, "  0.00%  0/1000 bytes  ds/y.bin") {
		t.Errorf("--check as uid 1000 through a read-only bind: %s; want exit 3 and exact shares", r)
	}

	// A manifest of long paths: the request is several ioctls long.
	var manifest strings.Builder
	for name := range many {
		fmt.Fprintf(&manifest, "%s\n", filepath.Join(ro, name))
	}
	if manifest.Len() < 2*control.IoctlMaxChunk {
		t.Fatalf("the manifest is %d bytes: too short to need several ioctls", manifest.Len())
	}
	mf := filepath.Join(testDir(t, "manifest"), "epoch0.txt")
	if err := os.WriteFile(mf, []byte(manifest.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r = prefetchAsUser1000(t, "--manifest", mf)
	if want := fmt.Sprintf("prefetched %d of %d files", len(many), len(many)); r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Fatalf("prefetch of a %d-byte manifest as uid 1000: %s; want %q", manifest.Len(), r, want)
	}
	r = prefetchAsUser1000(t, "--check", filepath.Join(ro, "many"), filepath.Join(ro, "ds/x.bin"))
	if want := fmt.Sprintf("in %d files", len(many)+1); r.code != 0 || !strings.Contains(r.stdout, "total: 100.00% cached") || !strings.Contains(r.stdout, want) {
		t.Errorf("--check of what was prefetched: %s; want exit 0, 100%% %s", r, want)
	}

	// Reading it all through the read-only bind costs no backend request
	// (names are looked up first, so that only reads are counted).
	statTree(t, ro)
	before := proxy.Requests()
	readUnder(t, ro, map[string][]byte{"ds/x.bin": data})
	readUnder(t, ro, many)
	if n := proxy.Requests() - before; n != 0 {
		t.Errorf("reading what uid 1000 prefetched through the read-only bind made %d backend requests, want 0", n)
	}

	// Ctrl-C: the mount acknowledges the cancel (sent by ioctl: the
	// descriptor is read-only) with its final event, so the CLI says
	// what it always says, rather than giving up on an answer.
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, blobfsBin, "prefetch", "--progress-interval", "100ms", "--max-bandwidth", "4MB/s", "--parallel", "2", filepath.Join(ro, "slow/big.bin"))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/tmp"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{}}}
	stderr := interruptPrefetch(t, cmd)
	if !strings.Contains(stderr.String(), "what was fetched stays cached") {
		t.Errorf("interrupted prefetch: the mount's cancel acknowledgement did not arrive\nstderr: %s", stderr.String())
	}
}

// 2. `blobfs mount --read-only`: the same, on a mount that is read-only
// itself (and through the write transport's open, EROFS).
func TestPrefetchReadOnlyMount(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	files := map[string][]byte{
		"train/shard-000.tar": pseudoRandom(71, 2<<20+7),
		"train/shard-001.tar": pseudoRandom(72, 1<<20),
		"val/v.tar":           pseudoRandom(73, 4000),
	}
	putFiles(t, s, files)
	m, proxy, _ := prefetchMount(t, c, "--read-only", "--allow-other")
	requireEROFS(t, m.Dir)

	r := prefetchAsUser1000(t, m.Path("train"))
	if r.code != 0 || !strings.Contains(r.stdout, "prefetched 2 of 2 files") {
		t.Fatalf("prefetch as uid 1000 on a --read-only mount: %s\nlog:\n%s", r, tail(readFile(m.LogFile), 3000))
	}
	r = prefetchAsUser1000(t, "--check", m.Dir)
	if r.code != 3 || !strings.Contains(r.stdout, "100.00%  2097159/2097159 bytes  train/shard-000.tar") ||
		!strings.Contains(r.stdout, "100.00%  1048576/1048576 bytes  train/shard-001.tar") ||
		!strings.Contains(r.stdout, "  0.00%  0/4000 bytes  val/v.tar") {
		t.Errorf("--check as uid 1000 on a --read-only mount: %s; want exit 3 and exact shares", r)
	}
	statTree(t, m.Dir)
	before := proxy.Requests()
	readUnder(t, m.Dir, map[string][]byte{"train/shard-000.tar": files["train/shard-000.tar"], "train/shard-001.tar": files["train/shard-001.tar"]})
	if n := proxy.Requests() - before; n != 0 {
		t.Errorf("reading what was prefetched on the --read-only mount made %d backend requests, want 0", n)
	}
}

// 3. A request longer than the protocol allows (control.MaxRequestBytes),
// sent by ioctl on a read-only bind, is answered with a bad_request error
// event saying so; the mount then serves the next request, by ioctl and
// by the write transport on the writable mount under the bind. A read of a
// read-only open before any request fails at once (EINVAL) instead of
// waiting for an answer that cannot come, and other ioctl commands are
// ENOTTY.
func TestPrefetchReadOnlyOversizedRequest(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	s := newStore(t, c)
	putBlob(t, s, "a.bin", pseudoRandom(81, 5000), nil)
	m, _, _ := prefetchMount(t, c)
	ro := readOnlyBind(t, m.Dir)

	f, err := os.Open(filepath.Join(ro, control.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 10)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("read of a read-only open before any request: %v, want EINVAL", err)
	}
	// _IOR('b', 0x01, 8): the request command's number, the wrong way.
	var out [8]byte
	const iorCmd uint32 = 2<<30 | 8<<16 | control.IoctlType<<8 | control.IoctlNrWrite
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(iorCmd), uintptr(unsafe.Pointer(&out[0]))); errno != syscall.ENOTTY {
		t.Errorf("ioctl %#x on the control file: %v, want ENOTTY", iorCmd, errno)
	}
	f.Close()

	conn, err := control.OpenFile(ro)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// One line of MaxRequestBytes+1 bytes with its newline, sent a MiB
	// at a time (the mount may answer before the last of it).
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	left := control.MaxRequestBytes
	for left > 0 {
		n := min(left, len(chunk)-1)
		p := chunk[:n]
		if n == left {
			p = append(chunk[:n:n], '\n')
		}
		if _, err := conn.Write(p); err != nil {
			if errors.Is(err, syscall.EPIPE) { // the mount has answered already
				break
			}
			t.Fatalf("sending the request: %v", err)
		}
		left -= n
	}
	sc := bufio.NewScanner(conn)
	if !sc.Scan() {
		t.Fatalf("no answer to an oversized request: %v", sc.Err())
	}
	var e control.Event
	if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
		t.Fatalf("answer %q: %v", sc.Text(), err)
	}
	if e.Type != control.EventError || e.Code != control.CodeBadRequest || !strings.Contains(e.Error, fmt.Sprintf("request longer than %d bytes", control.MaxRequestBytes)) {
		t.Errorf("answer to an oversized request: %+v, want a bad_request error naming the limit", e)
	}
	if sc.Scan() {
		t.Errorf("more after the final event: %q", sc.Text())
	}
	conn.Close()

	r := prefetchCmd(t, m, filepath.Join(ro, "a.bin"))
	if r.code != 0 || !strings.Contains(r.stdout, "prefetched 1 of 1 files") {
		t.Errorf("prefetch after the oversized request: %s", r)
	}

	// The write transport still serves the writable mount underneath.
	wf, err := control.OpenFileWrite(m.Dir)
	if err != nil {
		t.Fatalf("read-write open of the writable mount's control file: %v", err)
	}
	final, err := control.Do(context.Background(), wf, control.Request{Op: control.OpStatus, Paths: []string{"a.bin"}}, nil)
	if err != nil || final.Type != control.EventDone || len(final.Files) != 1 || final.Files[0].CachedBytes != 5000 {
		t.Errorf("status through the write transport: %+v, %v; want a.bin with all 5000 bytes cached", final, err)
	}
}
