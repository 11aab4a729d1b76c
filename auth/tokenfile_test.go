package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestWriteTokenFilePermissions(t *testing.T) {
	lc := newLeakCheck(t)
	dir := filepath.Join(t.TempDir(), "pods", "uid-1", "volumes")
	path := filepath.Join(dir, "token")
	tok := "eyJ.first-token-value.sig"
	lc.secret(tok)
	if err := WriteTokenFile(path, tok); err != nil {
		t.Fatal(lc.err(err))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, want 0700", di.Mode().Perm())
	}
	if got, _ := os.ReadFile(path); string(got) != tok {
		t.Errorf("content %q", got)
	}

	// Overwrite: new content, still 0600, no temporary files left behind.
	tok2 := "eyJ.second-token-value.sig"
	lc.secret(tok2)
	if err := WriteTokenFile(path, tok2); err != nil {
		t.Fatal(lc.err(err))
	}
	if got, _ := os.ReadFile(path); string(got) != tok2 {
		t.Errorf("content after rewrite %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after two writes, want 1 (leftover temp files?)", len(entries))
	}

	// An existing directory keeps its mode.
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteTokenFile(filepath.Join(shared, "t"), tok); err != nil {
		t.Fatal(err)
	}
	if di, _ := os.Stat(shared); di.Mode().Perm() != 0o755 {
		t.Errorf("existing directory changed to %v", di.Mode().Perm())
	}
}

// Readers see the old token or the new one, whole, never a torn write.
func TestWriteTokenFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	tokens := make(map[string]bool)
	var list []string
	for i := 0; i < 4; i++ {
		// Large enough that a non-atomic write would be seen half done.
		tok := fmt.Sprintf("tok%d-", i) + strings.Repeat(fmt.Sprint(i), 64<<10)
		tokens[tok] = true
		list = append(list, tok)
	}
	if err := WriteTokenFile(path, list[0]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := WriteTokenFile(path, list[i%len(list)]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 300; i++ {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !tokens[string(got)] {
			t.Fatalf("read %d saw a torn token (%d bytes)", i, len(got))
		}
	}
	close(stop)
	wg.Wait()
}

func TestWriteTokenFileErrors(t *testing.T) {
	lc := newLeakCheck(t)
	tok := "eyJ.never-in-an-error.sig"
	lc.secret(tok)
	if err := WriteTokenFile(filepath.Join(t.TempDir(), "t"), ""); err == nil {
		t.Error("empty token written")
	}
	// A path below a regular file cannot be created.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := lc.err(WriteTokenFile(filepath.Join(file, "token"), tok))
	if err == nil || errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), file) {
		t.Errorf("err = %v", err)
	}
}
