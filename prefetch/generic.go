package prefetch

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
)

// checkFiles vets every file of a checkpoint whose format tells whether it
// was written to the end, whatever layout holds it:
//   - torch.save archives (.pt/.pth/.bin/.ckpt) must end with the zip end
//     record (see checkTorchFile);
//   - safetensors files must have a valid header and exactly the size it
//     describes;
//   - a directory holding DCP files must be a complete DCP checkpoint;
//   - a directory holding DeepSpeed model states must be a complete tag.
//
// Layout checks call it in addition to their own marker rules.
func checkFiles(ctx context.Context, t Tree, files []Entry) error {
	var vet []Entry
	dcpDirs, dsDirs := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		base := path.Base(f.Name)
		switch {
		case isDCPFile(base):
			dcpDirs[path.Dir(f.Name)] = true
			continue
		case dsModelRE.MatchString(base) || dsZeroRE.MatchString(base):
			dsDirs[path.Dir(f.Name)] = true
		}
		if isTorchFile(base) || strings.HasSuffix(base, ".safetensors") {
			vet = append(vet, f)
		}
	}
	for _, d := range sortedKeys(dcpDirs) {
		if _, err := checkDCP(ctx, t, relDir(d), files); err != nil {
			return err
		}
		// The DCP check covers its storage files.
		vet = removeUnder(vet, relDir(d))
	}
	for _, d := range sortedKeys(dsDirs) {
		if err := checkDeepSpeedTag(relDir(d), files); err != nil {
			return err
		}
	}
	return forEach(ctx, len(vet), func(ctx context.Context, i int) error {
		f := vet[i]
		if strings.HasSuffix(f.Name, ".safetensors") {
			_, err := ReadSafetensors(ctx, t, f.Name, f.Size)
			return err
		}
		return checkTorchFile(ctx, t, f)
	})
}

// relDir maps path.Dir's "." back to the Tree's root name "".
func relDir(d string) string {
	if d == "." {
		return ""
	}
	return d
}

func removeUnder(files []Entry, dir string) []Entry {
	out := files[:0]
	for _, f := range files {
		if relDir(path.Dir(f.Name)) != dir {
			out = append(out, f)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// walkChecked lists dir recursively and runs checkFiles; most layouts'
// check functions start with it.
func walkChecked(ctx context.Context, t Tree, dir string) ([]Entry, error) {
	files, err := walk(ctx, t, dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no files: %w", ErrIncomplete)
	}
	return files, checkFiles(ctx, t, files)
}
