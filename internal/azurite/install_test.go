package azurite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockFileSerializes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tools.lock")
	unlock, err := lockFile(ctxT(t), path)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file, so a second open in this
	// process contends like another test binary would.
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: err = %v, want a deadline error", err)
	}
	unlock()
	unlock2, err := lockFile(ctxT(t), path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestInstalledChecksVersion(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if installed(dir) {
		t.Fatal("empty dir counts as installed")
	}
	write("node_modules/azurite/package.json", `{"name":"azurite","version":"`+Version+`"}`)
	if installed(dir) {
		t.Fatal("install without the completion marker counts as installed")
	}
	write(installedMarker, Version+"\n")
	if !installed(dir) {
		t.Fatal("complete install not recognized")
	}
	write("node_modules/azurite/package.json", `{"name":"azurite","version":"3.0.0"}`)
	if installed(dir) {
		t.Fatal("another version counts as installed")
	}
}

// TestInstallIsIdempotent shows a second Install does not run npm: it
// succeeds with npm off the PATH.
func TestInstallIsIdempotent(t *testing.T) {
	first, err := Install(ctxT(t), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "")
	second, err := Install(ctxT(t), "")
	if err != nil || second != first {
		t.Fatalf("second Install = %q, %v; want %q", second, err, first)
	}
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("entry point: %v", err)
	}
}

func TestToolsDirOverride(t *testing.T) {
	t.Setenv(ToolsDirEnv, "/tmp/blobfs-tools-test")
	if d, err := ToolsDir(); err != nil || d != "/tmp/blobfs-tools-test" {
		t.Fatalf("ToolsDir = %q, %v", d, err)
	}
	t.Setenv(ToolsDirEnv, "")
	d, err := ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(d), "go.mod")); err != nil {
		t.Fatalf("ToolsDir %s is not next to go.mod: %v", d, err)
	}
}
