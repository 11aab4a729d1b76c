package azurite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Version is the Azurite release the harness installs and runs. It is
// pinned so every developer and CI run test against the same emulator.
const Version = "3.37.0"

// ToolsDirEnv names the environment variable that overrides where tools
// are installed (default: .tools at the repository root, which is
// git-ignored).
const ToolsDirEnv = "BLOBFS_TOOLS_DIR"

// installedMarker is written after npm install succeeded, so a half
// finished install (killed test binary, full disk) is redone next time.
const installedMarker = ".blobfs-installed"

// ToolsDir returns the directory that holds tools the tests install:
// $BLOBFS_TOOLS_DIR if set, else <repository root>/.tools, where the
// repository root is the nearest directory above the working directory
// that holds go.mod.
func ToolsDir() (string, error) {
	if d := os.Getenv(ToolsDirEnv); d != "" {
		return filepath.Abs(d)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("azurite: tools dir: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".tools"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("azurite: no go.mod above %s; set %s", wd, ToolsDirEnv)
		}
	}
}

// DefaultInstallDir is ToolsDir()/azurite.
func DefaultInstallDir() (string, error) {
	d, err := ToolsDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "azurite"), nil
}

// Install makes sure Azurite Version is installed in dir (DefaultInstallDir
// when empty) and returns the path of its blob service entry point.
// Concurrent callers, including other test binaries of one `go test ./...`,
// serialize on a file lock next to dir, and only the first one runs npm.
func Install(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = DefaultInstallDir(); err != nil {
			return "", err
		}
	}
	mainJS := filepath.Join(dir, "node_modules", "azurite", "dist", "src", "blob", "main.js")
	if installed(dir) {
		return mainJS, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("azurite: install: %w", err)
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have finished the install while we waited.
	if installed(dir) {
		return mainJS, nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("azurite: install needs npm: %w", err)
	}
	slog.Info("installing azurite (once per tools dir)", "version", Version, "dir", dir)
	start := time.Now()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "azurite@"+Version)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("azurite: npm install azurite@%s: %w\n%s", Version, err, tail(out.Bytes(), 4096))
	}
	if v := packageVersion(dir); v != Version {
		return "", fmt.Errorf("azurite: npm installed version %q, want %s\n%s", v, Version, tail(out.Bytes(), 4096))
	}
	if err := os.WriteFile(filepath.Join(dir, installedMarker), []byte(Version+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("azurite: install: %w", err)
	}
	slog.Info("installed azurite", "version", Version, "took", time.Since(start).Round(time.Millisecond))
	return mainJS, nil
}

func installed(dir string) bool {
	m, err := os.ReadFile(filepath.Join(dir, installedMarker))
	return err == nil && string(bytes.TrimSpace(m)) == Version && packageVersion(dir) == Version
}

func packageVersion(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "azurite", "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &pkg) != nil {
		return ""
	}
	return pkg.Version
}

// lockFile takes an exclusive flock on path, polling so that ctx can
// cancel the wait. The lock dies with the process, so a killed installer
// never leaves it held.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("azurite: install lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("azurite: install lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("azurite: waiting for install lock %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail returns at most the last n bytes of b, starting at a line boundary
// when one is near.
func tail(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	b = b[len(b)-n:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i < 200 {
		b = b[i+1:]
	}
	return "…" + string(b)
}
