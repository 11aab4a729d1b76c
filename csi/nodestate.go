package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// nodeState is the node server's memory across restarts, on the node's
// disk (a hostPath under the kubelet plugin directory), so that a restarted
// plugin knows which volumes it staged, which targets it published and
// which per-pod identity mounts serve them:
//
//	<dir>/volumes/<hash(volume id)>/stage.json
//	<dir>/volumes/<hash(volume id)>/targets/<hash(target)>.json
//	<dir>/volumes/<hash(volume id)>/identities/<identity key>/identity.json
//	<dir>/volumes/<hash(volume id)>/identities/<identity key>/token   (0600)
//	<dir>/volumes/<hash(volume id)>/identities/<identity key>/mnt/    (the mount)
//
// Directories are 0700 and files 0600: the token file is a credential.
// INVARIANT: callers hold the volume's lock for every change to its
// directory.
type nodeState struct {
	dir string
}

// stageRecord is what NodeStageVolume did.
type stageRecord struct {
	VolumeID    string `json:"volumeID"`
	StagingPath string `json:"stagingPath"`
	// PerPod: nothing is mounted at StagingPath; each identity has its own mount.
	PerPod       bool   `json:"perPod,omitempty"`
	MountGroup   string `json:"mountGroup,omitempty"`
	GIDFromGroup bool   `json:"gidFromGroup,omitempty"`
}

// targetRecord is one NodePublishVolume.
type targetRecord struct {
	VolumeID   string `json:"volumeID"`
	Target     string `json:"target"`
	Source     string `json:"source"`
	ReadOnly   bool   `json:"readOnly,omitempty"`
	AccessMode string `json:"accessMode"`
	// Identity is the per-pod identity key whose mount Source is; empty
	// for a staged volume.
	Identity string `json:"identity,omitempty"`
}

// identityRecord describes one per-pod identity mount.
type identityRecord struct {
	VolumeID     string `json:"volumeID"`
	MountGroup   string `json:"mountGroup,omitempty"`
	GIDFromGroup bool   `json:"gidFromGroup,omitempty"`
}

// shortHash names a directory after an arbitrary string (volume ids hold
// '#' and '/', targets are long paths).
func shortHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func (s nodeState) volumeDir(volumeID string) string {
	return filepath.Join(s.dir, "volumes", shortHash(volumeID))
}

func (s nodeState) identityDir(volumeID, identity string) string {
	return filepath.Join(s.volumeDir(volumeID), "identities", identity)
}

func (s nodeState) tokenFile(volumeID, identity string) string {
	return filepath.Join(s.identityDir(volumeID, identity), "token")
}

func (s nodeState) identityMount(volumeID, identity string) string {
	return filepath.Join(s.identityDir(volumeID, identity), "mnt")
}

func (s nodeState) readStage(volumeID string) (*stageRecord, error) {
	var r stageRecord
	ok, err := readJSON(filepath.Join(s.volumeDir(volumeID), "stage.json"), &r)
	if !ok || err != nil {
		return nil, err
	}
	return &r, nil
}

func (s nodeState) writeStage(r stageRecord) error {
	return writeJSON(filepath.Join(s.volumeDir(r.VolumeID), "stage.json"), r)
}

func (s nodeState) removeStage(volumeID string) error {
	return removeFile(filepath.Join(s.volumeDir(volumeID), "stage.json"))
}

func (s nodeState) targetPath(volumeID, target string) string {
	return filepath.Join(s.volumeDir(volumeID), "targets", shortHash(target)+".json")
}

func (s nodeState) readTarget(volumeID, target string) (*targetRecord, error) {
	var r targetRecord
	ok, err := readJSON(s.targetPath(volumeID, target), &r)
	if !ok || err != nil {
		return nil, err
	}
	return &r, nil
}

func (s nodeState) writeTarget(r targetRecord) error {
	return writeJSON(s.targetPath(r.VolumeID, r.Target), r)
}

func (s nodeState) removeTarget(volumeID, target string) error {
	return removeFile(s.targetPath(volumeID, target))
}

// targets lists the volume's published targets.
func (s nodeState) targets(volumeID string) ([]targetRecord, error) {
	return s.targetsIn(s.volumeDir(volumeID))
}

func (s nodeState) targetsIn(volDir string) ([]targetRecord, error) {
	dir := filepath.Join(volDir, "targets")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node state: %w", err)
	}
	var out []targetRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var r targetRecord
		if ok, err := readJSON(filepath.Join(dir, e.Name()), &r); err != nil {
			return nil, err
		} else if ok {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s nodeState) readIdentity(volumeID, identity string) (*identityRecord, error) {
	var r identityRecord
	ok, err := readJSON(filepath.Join(s.identityDir(volumeID, identity), "identity.json"), &r)
	if !ok || err != nil {
		return nil, err
	}
	return &r, nil
}

func (s nodeState) writeIdentity(identity string, r identityRecord) error {
	return writeJSON(filepath.Join(s.identityDir(r.VolumeID, identity), "identity.json"), r)
}

// identities lists the identity keys with a directory under the volume.
func (s nodeState) identities(volumeID string) ([]string, error) {
	return listDirs(filepath.Join(s.volumeDir(volumeID), "identities"))
}

// removeIdentity deletes an identity's directory: its record and token.
// Its mount must be gone.
func (s nodeState) removeIdentity(volumeID, identity string) error {
	dir := s.identityDir(volumeID, identity)
	// Remove the mount point with os.Remove first: RemoveAll must never
	// walk into a mount that is, against expectation, still there.
	if err := os.Remove(filepath.Join(dir, "mnt")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("node state: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	return nil
}

// gcVolume removes the volume's directory once nothing is recorded in it.
func (s nodeState) gcVolume(volumeID string) {
	dir := s.volumeDir(volumeID)
	for _, sub := range []string{"targets", "identities"} {
		_ = os.Remove(filepath.Join(dir, sub)) // only if empty
	}
	_ = os.Remove(dir) // only if empty
}

// volumeDirs lists every volume directory, for start-up recovery.
func (s nodeState) volumeDirs() ([]string, error) {
	names, err := listDirs(filepath.Join(s.dir, "volumes"))
	if err != nil {
		return nil, err
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = filepath.Join(s.dir, "volumes", n)
	}
	return out, nil
}

func listDirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node state: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// readJSON reads a record; a missing file is (false, nil).
func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("node state: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("node state: %s is corrupt: %w", path, err)
	}
	return true, nil
}

// writeJSON replaces a record atomically (temporary file, fsync, rename),
// so a crash leaves the old record or the new one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	return writeFileAtomic(path, b)
}

// writeFileAtomic writes data to path through a 0600 temporary file in the
// same directory (created 0700 if missing).
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	return nil
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("node state: %w", err)
	}
	return nil
}
