package mounte2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// The mount's life: foreground and SIGTERM, refusing bad input without
// leaving anything behind, failing reads when the backend dies, keeping
// the key out of argv and logs.

// A foreground mount serves until SIGTERM, then unmounts and exits 0.
func TestMountForegroundSIGTERM(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	base := testDir(t, "fg")
	dir, cache := filepath.Join(base, "mnt"), filepath.Join(base, "cache")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(blobfsBin, mountArgs(dir, c, az.BlobEndpoint(), cache, "", "--foreground")...)
	cmd.Env = blobfsEnv(az.Key())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if mi, ok := findMount(dir); ok {
			t.Errorf("%s still mounted at the end of the test", dir)
			forceUnmount(mi)
		}
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, ok := findMount(dir); ok {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("blobfs mount --foreground exited before mounting: %v\nstderr:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 2 minutes\nstderr:\n%s", dir, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	writeFile(t, filepath.Join(dir, "hello.txt"), []byte("hello"))
	wantContent(t, filepath.Join(dir, "hello.txt"), []byte("hello"))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("still running 2 minutes after SIGTERM\nstderr:\n%s", stderr.String())
	}
	if _, ok := findMount(dir); ok {
		t.Errorf("%s still mounted after the foreground blobfs exited", dir)
	}
	if strings.Contains(stdout.String()+stderr.String(), az.Key()) {
		t.Error("the key appears in the foreground blobfs's output")
	}
	if stdout.Len() > 0 {
		t.Logf("stdout: %s", stdout.String())
	}
	wantBlob(t, newStore(t, c), "hello.txt", []byte("hello"))
}

// wrongKey is a well-formed shared key that is not the account's.
func wrongKey(t *testing.T) string {
	b := make([]byte, 64)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// 10. Bad input: a clear message on stderr, a non-zero exit (2 for usage
// errors, 1 for runtime errors), the key nowhere in the output or the
// log, and nothing left mounted or running.
func TestMountBadInput(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	unreachable := fmt.Sprintf("http://127.0.0.1:%d/%s", closedPort(t), azurite.Account)

	// A mount for the already-mounted case.
	busy := mountT(t, c, mountConfig{})

	badYAML := filepath.Join(testDir(t, "cfg"), "config.yaml")
	if err := os.WriteFile(badYAML, []byte("azstorage:\n  container: [unclosed\n  account-name: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		container  string
		endpoint   string
		key        string
		mountpoint string // "" means a fresh empty directory
		args       []string
		code       int
		phrase     string
	}{
		{name: "missing-container", container: "no-such-container", code: 1, phrase: "container does not exist"},
		{name: "missing-container-foreground", container: "no-such-container", args: []string{"--foreground"}, code: 1, phrase: "container does not exist"},
		{name: "wrong-key", key: wrongKey(t), code: 1, phrase: "access denied"},
		{name: "unreachable-endpoint", endpoint: unreachable, args: []string{"--max-retries", "1"}, code: 1, phrase: "unreachable"},
		{name: "missing-mountpoint", mountpoint: filepath.Join(tmpRoot, "no", "such", "dir"), code: 1, phrase: "does not exist"},
		{name: "already-mounted", mountpoint: busy.Dir, code: 1, phrase: "already a mount point"},
		{name: "malformed-config", args: []string{"--config-file", badYAML}, code: 2, phrase: "not valid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			container, endpoint, key, dir := c, az.BlobEndpoint(), az.Key(), tc.mountpoint
			if tc.container != "" {
				container = tc.container
			}
			if tc.endpoint != "" {
				endpoint = tc.endpoint
			}
			if tc.key != "" {
				key = tc.key
			}
			base := testDir(t, "bad")
			if dir == "" {
				dir = filepath.Join(base, "mnt")
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			mountsBefore := mountCount(dir)
			logFile := filepath.Join(base, "blobfs.log")
			r := runBlobfs(t, blobfsEnv(key), mountArgs(dir, container, endpoint, filepath.Join(base, "cache"), logFile, tc.args...)...)
			if r.code != tc.code {
				t.Errorf("exit code %d, want %d\n%s", r.code, tc.code, r)
			}
			if !strings.Contains(r.stderr, tc.phrase) {
				t.Errorf("stderr lacks %q:\n%s", tc.phrase, r.stderr)
			}
			if strings.Count(r.stderr, "\n") > 12 {
				t.Errorf("stderr is %d lines; a clear message is short:\n%s", strings.Count(r.stderr, "\n"), r.stderr)
			}
			log := readFile(logFile)
			for _, where := range []struct{ name, text string }{{"stdout", r.stdout}, {"stderr", r.stderr}, {"log", log}} {
				if strings.Contains(where.text, key) {
					t.Errorf("the account key appears in %s", where.name)
				}
			}
			if n := mountCount(dir); n != mountsBefore {
				t.Errorf("%d mounts at %s after the failed mount, %d before", n, dir, mountsBefore)
			}
			if left := fuseMountsUnder(base); len(left) > 0 {
				t.Errorf("FUSE mounts left: %v", left)
			}
			// No daemon may linger for this mountpoint (the already-mounted
			// case has the good mount's daemon, and only that one).
			want := 0
			if tc.name == "already-mounted" {
				want = 1
			}
			var pids []int
			for range 100 {
				if pids = processesWithArg(dir); len(pids) <= want {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if len(pids) > want {
				t.Errorf("blobfs processes still running for %s: %v", dir, pids)
			}
			if t.Failed() && log != "" {
				t.Logf("log:\n%s", tail(log, 3000))
			}
		})
	}
	// The good mount is unharmed.
	writeFile(t, busy.Path("still-works.txt"), []byte("yes"))
	wantContent(t, busy.Path("still-works.txt"), []byte("yes"))
}

// 11. When the backend dies mid-read, reads fail with EIO after bounded
// retries and never hang; once the backend answers again, reads work.
func TestMountBackendDiesMidRead(t *testing.T) {
	requireHarness(t)
	size := testenv.Pick(32<<20, 256<<20)
	data := pseudoRandom(11, size)
	for _, how := range []string{"503-every-request", "proxy-closed"} {
		t.Run(how, func(t *testing.T) {
			c := newContainer(t)
			putBlob(t, newStore(t, c), "data.bin", data, nil)
			proxy := azurite.NewFaultProxyT(t, az)
			m := mountT(t, c, mountConfig{Endpoint: proxy.BlobEndpoint()})

			f, err := os.Open(m.Path("data.bin"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 64<<10)
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Fatalf("read before the failure: %v", err)
			}
			if !bytes.Equal(buf, data[:len(buf)]) {
				t.Fatal("first read returned wrong bytes")
			}

			if how == "proxy-closed" {
				proxy.Close()
			} else {
				proxy.FailNext(1 << 30)
			}
			far := int64(size) * 3 / 4 // beyond any readahead of the first read
			var n int
			start := time.Now()
			withTimeout(t, 2*time.Minute, "read from a dead backend", func() {
				n, err = f.ReadAt(buf, far)
			})
			t.Logf("read failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("read from a dead backend: %d bytes, %v; want EIO", n, err)
			}
			if how == "proxy-closed" {
				return
			}
			if got := proxy.Requests(); got < 2 {
				t.Errorf("the proxy saw %d requests: was the failing read sent at all?", got)
			}
			proxy.FailNext(0)
			withTimeout(t, 2*time.Minute, "read after recovery", func() {
				n, err = f.ReadAt(buf, far)
			})
			if err != nil || !bytes.Equal(buf[:n], data[far:far+int64(len(buf))]) {
				t.Errorf("read after the backend recovered: %d bytes, %v (right bytes: %v)", n, err, bytes.Equal(buf[:n], data[far:far+int64(n)]))
			}
		})
	}
}

// 12. The key reaches the daemon only through the environment: it is in
// neither the daemon's command line nor its log, even at debug level and
// after real I/O.
func TestMountKeepsKeyOutOfArgvAndLogs(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	m := mountT(t, c, mountConfig{Args: []string{"--log-level", "debug"}})
	if m.PID == 0 {
		t.Fatal("no daemon pid")
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.PID))
	if err != nil {
		t.Fatalf("daemon cmdline: %v", err)
	}
	if !bytes.Contains(cmdline, []byte(m.Dir)) {
		t.Fatalf("pid %d does not look like the daemon: %q", m.PID, cmdline)
	}
	key := az.Key()
	if bytes.Contains(cmdline, []byte(key)) {
		t.Errorf("the key is in the daemon's command line: %q", cmdline)
	}
	// Real work, so the log has requests in it.
	writeFile(t, m.Path("f.txt"), []byte("data"))
	wantContent(t, m.Path("f.txt"), []byte("data"))
	if _, err := os.ReadDir(m.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.Path("f.txt"), m.Path("g.txt")); err != nil {
		t.Fatal(err)
	}
	_, _ = os.Stat(m.Path("missing"))
	m.unmount(t)
	log := readFile(m.LogFile)
	if !strings.Contains(log, "mounted") {
		t.Errorf("the daemon log does not look like one:\n%s", log)
	}
	for _, secret := range []string{key, strings.TrimRight(key, "="), base64.URLEncoding.EncodeToString(mustDecode(t, key))} {
		if strings.Contains(log, secret) {
			t.Errorf("the key (or an encoding of it) is in the daemon log %s", m.LogFile)
		}
	}
}

func mustDecode(t *testing.T, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// `blobfs unmount` refuses a busy mount and says so; --lazy detaches it
// at once, and the daemon exits 0 when the last open file is closed.
func TestMountUnmountBusyThenLazy(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	m := mountT(t, c, mountConfig{})
	writeFile(t, m.Path("open.txt"), []byte("held open"))
	f, err := os.Open(m.Path("open.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	r := runBlobfs(t, m.env, "unmount", m.Dir)
	if r.code != 1 || !strings.Contains(r.stderr, "busy") {
		t.Errorf("unmount of a busy mount: %s\nwant exit 1 and a message saying it is busy", r)
	}
	if _, ok := findMount(m.Dir); !ok {
		t.Fatal("the busy mount went away")
	}
	r = runBlobfs(t, m.env, "unmount", "--lazy", m.Dir)
	if r.code != 0 {
		t.Errorf("unmount --lazy: %s", r)
	}
	if _, ok := findMount(m.Dir); ok {
		t.Error("still in mountinfo after unmount --lazy")
	}
	// The detached mount still serves the open file.
	b := make([]byte, 64)
	if n, err := f.ReadAt(b, 0); string(b[:n]) != "held open" {
		t.Errorf("read the open file after the lazy unmount: %q, %v", b[:n], err)
	}
	if _, exited := waitExit(m.PID, 200*time.Millisecond); exited {
		t.Error("the daemon exited while a file of its detached mount was still open")
	}
	f.Close()
	code, exited := waitExit(m.PID, time.Minute)
	if !exited || code != 0 {
		t.Errorf("daemon after the last close of a lazily unmounted mount: exited %v, code %d\nlog:\n%s", exited, code, tail(readFile(m.LogFile), 3000))
	}
}

// SIGTERM to the daemon unmounts cleanly: exit 0, nothing mounted.
func TestMountDaemonSIGTERM(t *testing.T) {
	requireHarness(t)
	c := newContainer(t)
	m := mountT(t, c, mountConfig{})
	writeFile(t, m.Path("f.txt"), []byte("before SIGTERM"))
	if err := syscall.Kill(m.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, exited := waitExit(m.PID, time.Minute)
	if !exited || code != 0 {
		t.Errorf("daemon after SIGTERM: exited %v, code %d\nlog:\n%s", exited, code, tail(readFile(m.LogFile), 3000))
	}
	if _, ok := findMount(m.Dir); ok {
		t.Errorf("%s still mounted after the daemon's SIGTERM", m.Dir)
	}
	wantBlob(t, newStore(t, c), "f.txt", []byte("before SIGTERM"))
}
