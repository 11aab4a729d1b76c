package bootstrap_test

import (
	"bytes"
	"context"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/blobfs/blobfs/internal/bootstrap"
	"github.com/blobfs/blobfs/internal/cli"
)

var update = flag.Bool("update", false, "rewrite deploy/ray from its config files instead of comparing")

// examples are the checked-in renders under deploy/ray: each config file,
// the directory rendered from it, and whether it has a clusters list (one
// directory per cluster).
var examples = []struct {
	config, dir string
	clusters    []string
}{
	{"single.yaml", "single", nil},
	{"multi-region.yaml", "multi-region", []string{"westeurope", "eastus"}},
}

const deployRay = "../../deploy/ray"

// TestCheckedInExamples renders each deploy/ray config exactly as its
// README command does (through the CLI) and compares every file with the
// checked-in copy, so the examples never drift from the renderer. With
// -update it rewrites them:
//
//	go test ./internal/bootstrap -run TestCheckedInExamples -args -update
func TestCheckedInExamples(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.dir, func(t *testing.T) {
			cfgPath := filepath.Join(deployRay, ex.config)
			out := t.TempDir()
			var stdout, stderr bytes.Buffer
			code := cli.Main(context.Background(), []string{"bootstrap", "--config-file", cfgPath, "-o", out, "--print-az"}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("blobfs bootstrap exit %d: %s", code, stderr.String())
			}
			if err := os.WriteFile(filepath.Join(out, "az.sh"), stdout.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(deployRay, ex.dir)
			if *update {
				if err := os.RemoveAll(want); err != nil {
					t.Fatal(err)
				}
				if err := os.CopyFS(want, os.DirFS(out)); err != nil {
					t.Fatal(err)
				}
				t.Logf("rewrote %s", want)
			}
			got, wantFiles := tree(t, out), tree(t, want)
			if !slices.Equal(keys(got), keys(wantFiles)) {
				t.Errorf("%s holds %v, a fresh render %v: run go test ./internal/bootstrap -run TestCheckedInExamples -args -update", want, keys(wantFiles), keys(got))
			}
			for name, b := range got {
				if w, ok := wantFiles[name]; ok && !bytes.Equal(b, w) {
					t.Errorf("%s/%s differs from a fresh render (first difference at line %d): run go test ./internal/bootstrap -run TestCheckedInExamples -args -update",
						want, name, firstDiffLine(w, b))
				}
			}

			// The checked-in manifests themselves decode strictly, pass
			// KubeRay's schemas and are wired together.
			c, err := ParseConfig(must(os.ReadFile(cfgPath)))
			if err != nil {
				t.Fatal(err)
			}
			clusters, err := Resolve(c, Settings{})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range clusters {
				dir := want
				if ex.clusters != nil {
					dir = filepath.Join(want, s.Name)
				}
				names = append(names, s.Name)
				var stream []byte
				for _, f := range []string{FileNamespace, FileStorage, FileRayCluster, FileRayJob} {
					stream = append(stream, must(os.ReadFile(filepath.Join(dir, f)))...)
					stream = append(stream, '\n')
				}
				CheckStream(t, s, stream)
			}
			if ex.clusters != nil && !slices.Equal(names, ex.clusters) {
				t.Errorf("clusters %v, want %v", names, ex.clusters)
			}
			// The README names the command that renders each example.
			readme := string(must(os.ReadFile(filepath.Join(deployRay, "README.md"))))
			cmd := "blobfs bootstrap --config-file deploy/ray/" + ex.config + " -o deploy/ray/" + ex.dir + " --print-az > deploy/ray/" + ex.dir + "/az.sh"
			if !strings.Contains(readme, cmd) {
				t.Errorf("deploy/ray/README.md lacks the command %q", cmd)
			}
		})
	}
}

func tree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = must(os.ReadFile(p))
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

func keys(m map[string][]byte) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	slices.Sort(k)
	return k
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
