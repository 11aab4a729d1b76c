package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blobfs/blobfs/internal/control"
	"github.com/blobfs/blobfs/internal/mountinfo"
)

func TestPrefetchCommandErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, []byte("# nothing\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"prefetch", dir}, ExitUsage, "is not inside a blobfs mount"},
		{[]string{"prefetch", "--manifest", filepath.Join(dir, "missing.txt")}, ExitError, "manifest: open"},
		{[]string{"prefetch", "--manifest", empty}, ExitUsage, "lists no paths"},
		{[]string{"prefetch", "--evict", "--checkpoint", "/m/c"}, ExitUsage, "take paths, not --checkpoint"},
		{[]string{"prefetch", "--evict", "--pin", "/m/x"}, ExitUsage, "exclude each other"},
		{[]string{"prefetch", "--checkpoint", "/m/c", "/m/x"}, ExitUsage, "takes no other paths"},
		{[]string{"prefetch", "--container", "data", "x"}, ExitUsage, "no storage account"},
		{[]string{"prefetch", "--container", "data", "--account", "acct1", "--socket", "/s", "x"}, ExitUsage, "not both"},
		{[]string{"prefetch", "--account-key", "k", "x"}, ExitUsage, "never takes secrets"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := execute(t, nil, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, tc.code, tc.want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

func TestBlobfsMountOf(t *testing.T) {
	ms := []mountinfo.Mount{
		{Point: "/", FSType: "ext4"},
		{Point: "/mnt/data", FSType: "fuse.blobfs"},
		{Point: "/mnt/data/inner", FSType: "fuse.blobfs"},
		{Point: "/mnt/other", FSType: "fuse.sshfs"},
	}
	for abs, want := range map[string]string{
		"/mnt/data":         "/mnt/data",
		"/mnt/data/x/y":     "/mnt/data",
		"/mnt/data/inner/z": "/mnt/data/inner",
		"/mnt/database":     "",
		"/mnt/other/x":      "",
	} {
		if got, _ := blobfsMountOf(ms, abs); got != want {
			t.Errorf("blobfsMountOf(%q) = %q, want %q", abs, got, want)
		}
	}
	for in, want := range map[string]string{"/a/b/": "a/b", "a/./b": "a/b", "../../x": "x", "/": "", "": ""} {
		if got := cleanRelOne(in); got != want {
			t.Errorf("cleanRelOne(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	b := newProgressBar(&buf, time.Nanosecond) // not a terminal: plain lines
	if b.tty {
		t.Fatal("a buffer is not a terminal")
	}
	p := control.Progress{TotalFiles: 4, TotalBytes: 4 << 20, DoneFiles: 1, DoneBytes: 1 << 20}
	b.update(p) // the first update only starts the clock
	b.prevAt = b.prevAt.Add(-time.Second)
	p.DoneBytes, p.DoneFiles = 2<<20, 2
	b.update(p)
	got := buf.String()
	for _, want := range []string{"prefetch:  50.0%", "2.0 MiB / 4.0 MiB", "2/4 files", "KiB/s", "ETA 2s"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress line %q lacks %q", got, want)
		}
	}
	b.tty, b.width = true, 100
	if line := b.line(p, true); !strings.HasPrefix(line, "[") || !strings.Contains(line, "█") || !strings.Contains(line, "░") {
		t.Errorf("terminal bar %q", line)
	}
	var nilBar *progressBar
	nilBar.update(p)
	nilBar.finish(&p)
}
