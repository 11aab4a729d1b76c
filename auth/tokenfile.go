package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteTokenFile atomically replaces path with token, readable by its
// owner only (0600). The CSI node server uses it for per-pod tokens (CSI
// tokenRequests, audience api://AzureADTokenExchange) that a mount then
// reads as its federated token file at every refresh.
//
// The token is written to a 0600 temporary file in the same directory,
// synced, and renamed over path, so a concurrent reader sees the old token
// or the new one, never a torn one. A missing directory is created 0700;
// an existing one is left as it is. Errors name the path, never the token.
func WriteTokenFile(path, token string) (err error) {
	if token == "" {
		return errors.New("auth: WriteTokenFile: empty token")
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("auth: token file directory: %w", err)
	}
	// os.CreateTemp creates the file 0600 whatever the umask.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("auth: token file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// Explicit, in case the temp file was created by a different rule
	// (another platform's CreateTemp).
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("auth: token file %s: %w", path, err)
	}
	if _, err = f.WriteString(token); err != nil {
		return fmt.Errorf("auth: writing token file %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("auth: syncing token file %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("auth: closing token file %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("auth: replacing token file %s: %w", path, err)
	}
	// Make the rename itself durable; a failure here loses nothing a
	// reader could see, so it is not an error.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
