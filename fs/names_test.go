package fs

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

func TestPathToBlob(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		path    string
		want    string
		wantErr syscall.Errno
	}{
		{"", "", 0},
		{"/", "", 0},
		{"a", "a", 0},
		{"/a/b/c.txt", "a/b/c.txt", 0},
		{"a//b/", "a/b", 0},
		{"a/./b", "a/b", 0},
		{"a/../b", "b", 0},
		{"../../etc/passwd", "etc/passwd", 0}, // cannot climb out of the root
		{"ünïcode/файл", "ünïcode/файл", 0},
		{strings.Repeat("y", 256), "", syscall.ENAMETOOLONG},
		{strings.Join([]string{long, long, long, long, long, long}, "/"), "", syscall.ENAMETOOLONG},
		{"bad\xffutf8", "", syscall.EINVAL},
		{"nul\x00", "", syscall.EINVAL},
	}
	for _, tt := range tests {
		got, err := pathToBlob(tt.path)
		if tt.wantErr != 0 {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("pathToBlob(%q) error = %v, want %v", tt.path, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("pathToBlob(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
}

func TestBlobToPath(t *testing.T) {
	tests := []struct {
		name string
		want string
		ok   bool
	}{
		{"a", "a", true},
		{"a/b/c", "a/b/c", true},
		{"dir/", "", false}, // placeholder: shown as the directory, not a file
		{"a//b", "", false},
		{"a/./b", "", false},
		{"a/../b", "", false},
		{"", "", false},
		{strings.Repeat("z", 256) + "/f", "", false},
		{"ok/" + strings.Repeat("z", 255), "ok/" + strings.Repeat("z", 255), true},
	}
	for _, tt := range tests {
		got, ok := blobToPath(tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("blobToPath(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
		if ok {
			back, err := pathToBlob(got)
			if err != nil || back != tt.name {
				t.Errorf("round trip %q -> %q -> %q, %v", tt.name, got, back, err)
			}
		}
	}
}

func TestNewChild(t *testing.T) {
	tests := []struct {
		dir, comp string
		want      string
		wantErr   syscall.Errno
	}{
		{"", "a", "a", 0},
		{"a/b", "c", "a/b/c", 0},
		{"a", "", "", syscall.EINVAL},
		{"a", ".", "", syscall.EINVAL},
		{"a", "..", "", syscall.EINVAL},
		{"a", "x/y", "", syscall.EINVAL},
		// The service folds '\' into '/': "c\d" would alias "c/d".
		{"a", `c\d`, "", syscall.EINVAL},
		{"a", strings.Repeat("n", 255), "a/" + strings.Repeat("n", 255), 0},
		{"a", strings.Repeat("n", 256), "", syscall.ENAMETOOLONG},
		{strings.Repeat("d", 1000), strings.Repeat("n", 30), "", syscall.ENAMETOOLONG},
		// 1024 characters, not bytes, is the blob limit.
		{strings.Repeat("é", 1000), strings.Repeat("n", 23), strings.Repeat("é", 1000) + "/" + strings.Repeat("n", 23), 0},
	}
	for _, tt := range tests {
		got, err := newChild(tt.dir, tt.comp)
		if tt.wantErr != 0 {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("newChild(%.20q, %.20q) error = %v, want %v", tt.dir, tt.comp, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("newChild(%.20q, %.20q) = %.30q, %v", tt.dir, tt.comp, got, err)
		}
	}
	if parentOf("a/b/c") != "a/b" || parentOf("a") != "" || dirPrefix("") != "" || dirPrefix("a") != "a/" {
		t.Error("parentOf/dirPrefix")
	}
	if !underDir("a/b", "a") || underDir("ab", "a") || underDir("a", "a") || !underDir("x", "") {
		t.Error("underDir")
	}
}
