package prefetch

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/memblob"
)

// fixtureDir holds the stand-in checkpoints of scripts/make-ckpt-fixtures.py
// (every layout, malformed ones included); realFixtureDir those saved by the
// frameworks themselves (scripts/make-real-ckpts.py: torch 2.11 DCP with
// FSDP2, transformers Trainer, Lightning). Tests of discovery and planning
// run on both sets, each against its own manifest.
const (
	fixtureDir     = "testdata/checkpoints"
	realFixtureDir = "testdata/real"
)

var fixtureSets = []string{fixtureDir, realFixtureDir}

// memTree is an in-memory Tree for synthetic layouts, with explicit
// modification times (git does not keep them, memblob sets them itself).
type memTree struct {
	files map[string][]byte
	mtime map[string]time.Time
}

func newMemTree() *memTree {
	return &memTree{files: map[string][]byte{}, mtime: map[string]time.Time{}}
}

func (m *memTree) add(name string, data []byte) *memTree {
	m.files[name] = data
	return m
}

func (m *memTree) ReadDir(ctx context.Context, dir string) ([]Entry, error) {
	prefix := dir + "/"
	if dir == "" {
		prefix = ""
	}
	seen := map[string]Entry{}
	for name, data := range m.files {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seen[rest[:i]] = Entry{Name: rest[:i], IsDir: true}
			continue
		}
		seen[rest] = Entry{Name: rest, Size: int64(len(data)), ModTime: m.mtime[name]}
	}
	if len(seen) == 0 && dir != "" {
		return nil, fmt.Errorf("memTree %q: %w", dir, fs.ErrNotExist)
	}
	out := make([]Entry, 0, len(seen))
	for _, e := range seen {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *memTree) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	data, ok := m.files[name]
	if !ok {
		return 0, fmt.Errorf("memTree %q: %w", name, fs.ErrNotExist)
	}
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	n := copy(p, data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memTree) Stat(ctx context.Context, name string) (Entry, error) {
	if data, ok := m.files[name]; ok {
		return Entry{Name: name[strings.LastIndexByte(name, '/')+1:], Size: int64(len(data)), ModTime: m.mtime[name]}, nil
	}
	for n := range m.files {
		if strings.HasPrefix(n, name+"/") {
			return Entry{Name: name[strings.LastIndexByte(name, '/')+1:], IsDir: true}, nil
		}
	}
	return Entry{}, fmt.Errorf("memTree %q: %w", name, fs.ErrNotExist)
}

// torchZip returns a small but real zip archive, shaped like torch.save's.
func torchZip(t testing.TB, payload string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	f, err := w.CreateHeader(&zip.FileHeader{Name: "archive/data.pkl", Method: zip.Store})
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(payload))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// safetensorsFile builds a safetensors file from (name, dtype, shape)
// triples, with every element byte set to its tensor's index.
func safetensorsFile(t testing.TB, tensors ...any) []byte {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for i := 0; i < len(tensors); i += 3 {
		name, dtype, shape := tensors[i].(string), tensors[i+1].(string), tensors[i+2].([]int64)
		n := dtypeBits[dtype]
		for _, d := range shape {
			n *= d
		}
		n = (n + 7) / 8
		begin := int64(len(data))
		data = append(data, bytes.Repeat([]byte{byte(i / 3)}, int(n))...)
		header[name] = map[string]any{"dtype": dtype, "shape": shape, "data_offsets": []int64{begin, int64(len(data))}}
	}
	js, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for (8+len(js))%8 != 0 {
		js = append(js, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	out = append(out, js...)
	return append(out, data...)
}

// fixtureTrees returns the fixture tree through both adapters: the OS
// directory and a memblob store the tree was uploaded into (under a prefix,
// to exercise the prefix mapping).
func fixtureTrees(t *testing.T) map[string]Tree { return fixtureTreesAt(t, fixtureDir) }

// fixtureTreesAt serves one fixture set through both Tree adapters: the
// directory and a blob store holding the same files under a prefix.
//
// Git keeps no modification times, and Lightning's "last" is chosen by them,
// so the directory adapter reads a copy whose times say what the manifest
// says: every half-written (skipped) checkpoint is newer than the rest, as a
// save cut short is in life. Without this, the order depends on how fast
// the checkout wrote the files and whether the clock ticked in between.
func fixtureTreesAt(t *testing.T, dir string) map[string]Tree {
	t.Helper()
	m := loadManifestAt(t, dir)
	var skipped []string
	for _, sc := range m.Scenarios {
		skipped = append(skipped, sc.Skipped...)
	}
	isNewer := func(rel string) bool {
		for _, s := range skipped {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				return true
			}
		}
		return false
	}
	copyDir := t.TempDir()
	base := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dst := filepath.Join(copyDir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		mtime := base
		if isNewer(filepath.ToSlash(rel)) {
			mtime = base.Add(time.Hour)
		}
		return os.Chtimes(dst, mtime, mtime)
	})
	if err != nil {
		t.Fatal(err)
	}
	dt, err := OpenDir(copyDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dt.Close() })
	return map[string]Tree{"dir": dt, "memblob": uploadTree(t, dir, "runs/")}
}

func uploadTree(t *testing.T, root, prefix string) *StoreTree {
	t.Helper()
	ctx := context.Background()
	st := memblob.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		_, err = st.Put(ctx, prefix+filepath.ToSlash(rel), data, blob.WriteOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return NewStoreTree(st, prefix)
}

// manifest is what scripts/make-ckpt-fixtures.py recorded.
type manifest struct {
	TorchVersion string              `json:"torch_version"`
	Scenarios    map[string]scenario `json:"scenarios"`
}

type scenario struct {
	Dir         string              `json:"dir"`
	Layout      Layout              `json:"layout"`
	Content     Layout              `json:"content"`
	Latest      string              `json:"latest"`
	Step        int64               `json:"step"`
	Skipped     []string            `json:"skipped"`
	Files       map[string]int64    `json:"files"`
	RankFiles   map[string][]string `json:"rank_files"`
	Safetensors []struct {
		File      string `json:"file"`
		DataStart int64  `json:"data_start"`
		Size      int64  `json:"size"`
		Tensors   []struct {
			Tensor string `json:"tensor"`
			Off    int64  `json:"off"`
			Len    int64  `json:"len"`
		} `json:"tensors"`
	} `json:"safetensors"`
	DCPItems []struct {
		FQN        string `json:"fqn"`
		File       string `json:"file"`
		Off        int64  `json:"off"`
		Len        int64  `json:"len"`
		Bytes      bool   `json:"bytes"`
		Replicated bool   `json:"replicated"`
		Rank       int    `json:"rank"`
	} `json:"dcp_items"`
}

// fixtureCase is one scenario with a chosen checkpoint, served by one Tree.
type fixtureCase struct {
	name string // set/tree/scenario, for t.Run
	tree Tree
	sc   scenario
}

// fixtureScenarios lists every scenario that has a newest complete
// checkpoint, in both fixture sets and through both Tree adapters, sorted by
// name so failures read in a stable order.
func fixtureScenarios(t *testing.T) []fixtureCase {
	t.Helper()
	var out []fixtureCase
	for _, set := range fixtureSets {
		m := loadManifestAt(t, set)
		for treeName, tree := range fixtureTreesAt(t, set) {
			for name, sc := range m.Scenarios {
				if sc.Latest != "" {
					out = append(out, fixtureCase{filepath.Base(set) + "/" + treeName + "/" + name, tree, sc})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func loadManifest(t *testing.T) manifest { return loadManifestAt(t, fixtureDir) }

func loadManifestAt(t *testing.T, dir string) manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// bytesOf expands ranges into a set of (file, offset) for coverage checks.
func bytesOf(rs []Range) map[string]map[int64]int {
	out := map[string]map[int64]int{}
	for _, r := range rs {
		if out[r.Name] == nil {
			out[r.Name] = map[int64]int{}
		}
		for o := r.Off; o < r.End(); o++ {
			out[r.Name][o]++
		}
	}
	return out
}

func fmtRanges(rs []Range) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %s [%d,+%d) %s\n", r.Name, r.Off, r.Len, r.Priority)
	}
	return b.String()
}

// flat forgets priorities and merges what becomes adjacent, to compare
// byte coverage.
func flat(rs []Range) []Range {
	out := make([]Range, len(rs))
	for i, r := range rs {
		r.Priority = 0
		out[i] = r
	}
	return Coalesce(out)
}

// TestMain keeps the skip logs of FindLatest out of test output.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}
