package prefetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Ray Train.
//
// Ray Train v1 (Tune-based, Ray 2.7+) persists each reported checkpoint to
// <storage>/<experiment>/<trial>/checkpoint_{index:06d}/. Ray Train v2
// persists to <storage>/<run>/checkpoint_{%Y-%m-%d_%H-%M-%S.%f}/ (or a
// name the user passes to report) and then rewrites
// checkpoint_manager_snapshot.json, whose latest_checkpoint_result is the
// checkpoint a restarted run gets from ray.train.get_checkpoint().
// The content is whatever the training function wrote: often a Hugging
// Face, DCP, DeepSpeed or Lightning checkpoint, or arbitrary files.
//
// Complete means: the directory has files; if its content is a known
// layout, that layout is complete (found by the same rules as FindLatest,
// also inside a single wrapping subdirectory such as the checkpoint/ that
// RayTrainReportCallback writes); otherwise every torch.save and
// safetensors file is whole and — because Ray uploads file by file — the
// directory holds every file name the next older checkpoint of the series
// held. With a v2 snapshot, only checkpoints it records count: newer ones
// are uploads in progress (or abandoned), the one it names latest comes
// first. Otherwise newest is the highest index (v1) or latest timestamp
// (v2; the fixed-width format sorts by time).

var (
	rayV1RE = regexp.MustCompile(`^checkpoint_(\d{6,})$`)
	rayV2RE = regexp.MustCompile(`^checkpoint_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(?:\.\d+)?$`)
)

const (
	raySnapshot     = "checkpoint_manager_snapshot.json"
	maxRaySnapshot  = 64 << 20
	rayMetadataJSON = ".metadata.json" // ray.train.Checkpoint.set_metadata
)

func (d dirEntries) isRayRun() bool {
	return d.hasFile(raySnapshot) || d.hasDirs(rayV1RE) || d.hasDirs(rayV2RE)
}

type raySnap struct {
	Latest *struct {
		Name string `json:"checkpoint_dir_name"`
	} `json:"latest_checkpoint_result"`
	Results []struct {
		Name string `json:"checkpoint_dir_name"`
	} `json:"checkpoint_results"`
}

func rayCandidates(ctx context.Context, t Tree, dir string, d dirEntries, depth int) ([]candidate, error) {
	type rc struct {
		name string
		v1   bool
		step int64
	}
	var dirs []rc
	for name := range d.dirs {
		switch {
		case rayV1RE.MatchString(name):
			dirs = append(dirs, rc{name, true, stepOf(name)})
		case rayV2RE.MatchString(name):
			dirs = append(dirs, rc{name, false, -1})
		}
	}
	var snap *raySnap
	recorded := map[string]bool{}
	if f, ok := d.files[raySnapshot]; ok {
		data, err := readSmall(ctx, t, join(dir, raySnapshot), f.Size, maxRaySnapshot)
		if err != nil {
			return nil, err
		}
		snap = &raySnap{}
		if err := json.Unmarshal(data, snap); err != nil {
			// Ray rewrites the snapshot in place; a torn one says nothing.
			snap = nil
		} else {
			for _, r := range snap.Results {
				recorded[r.Name] = true
			}
			if snap.Latest != nil {
				recorded[snap.Latest.Name] = true
			}
			// Names given to ray.train.report(checkpoint_dir_name=...)
			// match no pattern; the snapshot is how they are found.
			for name := range recorded {
				if _, ok := d.dirs[name]; ok && !rayV1RE.MatchString(name) && !rayV2RE.MatchString(name) && validBase(name) {
					dirs = append(dirs, rc{name, false, -1})
				}
			}
		}
	}
	sort.Slice(dirs, func(i, j int) bool {
		a, b := dirs[i], dirs[j]
		if a.v1 != b.v1 {
			return a.v1
		}
		if a.step != b.step {
			return a.step > b.step
		}
		return a.name > b.name
	})
	latest := ""
	if snap != nil && snap.Latest != nil {
		latest = snap.Latest.Name
	}
	var out, rest []candidate
	for i, rd := range dirs {
		older := ""
		if i+1 < len(dirs) {
			older = join(dir, dirs[i+1].name)
		}
		c := rayCandidate(t, join(dir, rd.name), older, rd.step, depth)
		switch {
		case snap != nil && !recorded[rd.name]:
			c.skip = fmt.Errorf("not recorded in %s: upload in progress or abandoned: %w", raySnapshot, ErrIncomplete)
		case rd.name == latest:
			out = append(out, c)
			continue
		}
		rest = append(rest, c)
	}
	if latest == "" {
		return rest, nil
	}
	// Newest first for reporting, but the snapshot's latest is tried before
	// any recorded older one.
	var head []candidate
	for len(rest) > 0 && rest[0].skip != nil {
		head, rest = append(head, rest[0]), rest[1:]
	}
	return append(append(head, out...), rest...), nil
}

func validBase(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.Contains(name, "/")
}

// rayCandidate checks one Ray checkpoint directory; older is the next older
// directory of the series ("" if none), used by the file-name rule.
func rayCandidate(t Tree, dir, older string, step int64, depth int) candidate {
	return candidate{layout: LayoutRay, path: dir, step: step, check: func(ctx context.Context) ([]Entry, Layout, error) {
		files, err := walk(ctx, t, dir)
		if err != nil {
			return nil, "", err
		}
		content := nonMarker(files, dir)
		if len(content) == 0 {
			return files, LayoutFiles, fmt.Errorf("no files: %w", ErrIncomplete)
		}
		inner, err := rayContent(ctx, t, dir, depth)
		switch {
		case err == nil:
			return files, inner.Content, nil
		case !errors.Is(err, ErrNoCheckpoint):
			return files, "", err
		case !errors.Is(err, errNoLayout):
			// A known layout with nothing complete in it.
			return files, "", fmt.Errorf("content: %w: %w", ErrIncomplete, err)
		}
		if err := checkFiles(ctx, t, files); err != nil {
			return files, LayoutFiles, err
		}
		if older != "" {
			if err := checkSameNames(ctx, t, dir, older, content); err != nil {
				return files, LayoutFiles, err
			}
		}
		return files, LayoutFiles, nil
	}}
}

// rayContent finds the layout inside a Ray checkpoint: in the directory
// itself, or in its only subdirectory when it has no other files.
func rayContent(ctx context.Context, t Tree, dir string, depth int) (Checkpoint, error) {
	ck, err := findLatest(ctx, t, dir, depth+1)
	if err == nil || !errors.Is(err, errNoLayout) {
		return ck, err
	}
	ents, lerr := t.ReadDir(ctx, dir)
	if lerr != nil {
		return ck, lerr
	}
	var sub string
	for _, e := range ents {
		switch {
		case e.IsDir && sub == "":
			sub = e.Name
		case e.IsDir, e.Name != rayMetadataJSON:
			return ck, err
		}
	}
	if sub == "" {
		return ck, err
	}
	return findLatest(ctx, t, join(dir, sub), depth+1)
}

// nonMarker drops Ray's own bookkeeping files from a listing.
func nonMarker(files []Entry, dir string) []Entry {
	var out []Entry
	for _, f := range files {
		if f.Name != join(dir, rayMetadataJSON) {
			out = append(out, f)
		}
	}
	return out
}

// checkSameNames reports ErrIncomplete when dir lacks a file name (relative
// to it) that older has: Ray uploads a checkpoint one file at a time.
func checkSameNames(ctx context.Context, t Tree, dir, older string, files []Entry) error {
	prev, err := walk(ctx, t, older)
	if err != nil {
		return nil // the older one is being deleted; nothing to compare
	}
	have := map[string]bool{}
	for _, f := range files {
		have[strings.TrimPrefix(f.Name, dir+"/")] = true
	}
	for _, f := range nonMarker(prev, older) {
		rel := strings.TrimPrefix(f.Name, older+"/")
		if !have[rel] {
			return fmt.Errorf("lacks %s, which %s has: upload in progress: %w", rel, path.Base(older), ErrIncomplete)
		}
	}
	return nil
}
