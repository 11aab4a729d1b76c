package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Layout names a checkpoint convention.
type Layout string

// Layouts recognised by FindLatest. Each layout's file says what
// "complete" means for it.
const (
	LayoutDeepSpeed   Layout = "deepspeed"   // deepspeed.go
	LayoutHuggingFace Layout = "huggingface" // hf.go
	LayoutDCP         Layout = "dcp"         // dcp.go
	LayoutRay         Layout = "ray"         // ray.go
	LayoutLightning   Layout = "lightning"   // lightning.go
	// LayoutFiles is content with no structure prefetch knows (inside a Ray
	// Train checkpoint): whole files.
	LayoutFiles Layout = "files"
)

// Checkpoint is one checkpoint found under a directory.
type Checkpoint struct {
	// Layout is the convention it was found by.
	Layout Layout
	// Content is the layout of its files: the same as Layout except for a
	// Ray Train checkpoint, which wraps another layout (or LayoutFiles).
	Content Layout
	// Path is the checkpoint's directory — or file, for a single-file
	// Lightning checkpoint — from the Tree's root.
	Path string
	// Step orders checkpoints of one series: the global step, checkpoint
	// index or step=N the name carries; -1 when it carries none (Ray Train
	// v2 timestamps, Lightning last.ckpt).
	Step int64
	// Files are the files a restore reads, Names from the Tree's root,
	// sorted. For DeepSpeed that is the tag directory plus the `latest` file.
	Files []Entry
}

// Size is the total size of the checkpoint's files.
func (c Checkpoint) Size() int64 {
	var n int64
	for _, f := range c.Files {
		n += f.Size
	}
	return n
}

// Candidate is one checkpoint considered by Candidates.
type Candidate struct {
	Checkpoint Checkpoint
	// Err is nil for a complete checkpoint; otherwise why it cannot be
	// restored (wrapping ErrIncomplete, ErrMalformed, or an I/O error).
	Err error
}

// candidate is a checkpoint before its completeness check.
type candidate struct {
	layout Layout
	path   string
	step   int64
	// skip, when set, rejects the candidate without checking it (e.g. a
	// DeepSpeed tag newer than `latest`).
	skip error
	// check verifies completeness and returns the files and content layout.
	check func(ctx context.Context) ([]Entry, Layout, error)
}

func (c candidate) run(ctx context.Context) Candidate {
	ck := Checkpoint{Layout: c.layout, Content: c.layout, Path: c.path, Step: c.step}
	err := c.skip
	if err == nil {
		var content Layout
		ck.Files, content, err = c.check(ctx)
		if content != "" {
			ck.Content = content
		}
	}
	if err != nil {
		err = fmt.Errorf("%s checkpoint %s: %w", c.layout, c.path, err)
	}
	return Candidate{Checkpoint: ck, Err: err}
}

// FindLatest returns the newest complete checkpoint under dir (a path from
// the Tree's root, "" for the root). dir may be a run directory holding a
// series of checkpoints (DeepSpeed save_dir, Trainer output_dir, a Ray
// Train trial or run directory, Lightning's checkpoint dirpath, a directory
// of numbered DCP checkpoints) or one checkpoint directory itself (not a
// single file: a Lightning .ckpt file is found through its directory).
// Newer checkpoints that are not complete are skipped, each logged with the
// reason. The error wraps ErrNoCheckpoint when nothing usable is there, or
// is the I/O failure that prevented looking.
func FindLatest(ctx context.Context, t Tree, dir string) (Checkpoint, error) {
	dir, err := cleanName(dir)
	if err != nil {
		return Checkpoint{}, err
	}
	return findLatest(ctx, t, dir, 0)
}

func findLatest(ctx context.Context, t Tree, dir string, depth int) (Checkpoint, error) {
	cands, err := discover(ctx, t, dir, depth)
	if err != nil {
		return Checkpoint{}, err
	}
	var newest error
	for _, c := range cands {
		r := c.run(ctx)
		if r.Err == nil {
			return r.Checkpoint, nil
		}
		if ctx.Err() != nil {
			return Checkpoint{}, ctx.Err()
		}
		if !errors.Is(r.Err, ErrIncomplete) && !errors.Is(r.Err, ErrMalformed) && !errors.Is(r.Err, fs.ErrNotExist) {
			// An I/O failure says nothing about the checkpoint; falling back
			// to an older one would prefetch the wrong bytes.
			return Checkpoint{}, r.Err
		}
		slog.InfoContext(ctx, "prefetch: skipping checkpoint", "path", c.path, "layout", string(c.layout), "reason", r.Err.Error())
		if newest == nil {
			newest = r.Err
		}
	}
	if newest != nil {
		return Checkpoint{}, fmt.Errorf("%s: none of %d checkpoints is complete: %w; newest: %w", displayDir(dir), len(cands), ErrNoCheckpoint, newest)
	}
	return Checkpoint{}, fmt.Errorf("%s: no checkpoint found: %w", displayDir(dir), ErrNoCheckpoint)
}

// Candidates lists every checkpoint FindLatest would consider under dir,
// newest first, each with its completeness verdict; FindLatest returns the
// first with a nil Err. It checks all of them, so it costs more I/O.
func Candidates(ctx context.Context, t Tree, dir string) ([]Candidate, error) {
	dir, err := cleanName(dir)
	if err != nil {
		return nil, err
	}
	cands, err := discover(ctx, t, dir, 0)
	if err != nil {
		return nil, err
	}
	out := make([]Candidate, 0, len(cands))
	for _, c := range cands {
		out = append(out, c.run(ctx))
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func displayDir(dir string) string {
	if dir == "" {
		return "tree root"
	}
	return dir
}

// errNoLayout: a directory matched no layout at all, as opposed to one
// whose checkpoints are all incomplete.
var errNoLayout = fmt.Errorf("no known checkpoint layout: %w", ErrNoCheckpoint)

// maxDepth bounds nested discovery (a Ray checkpoint wrapping a Lightning
// directory wrapping DeepSpeed is depth 3).
const maxDepth = 4

// discover lists the checkpoints in dir, newest first, by the first
// convention that matches dir's entries.
func discover(ctx context.Context, t Tree, dir string, depth int) ([]candidate, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%s: checkpoints nested deeper than %d: %w", displayDir(dir), maxDepth, ErrNoCheckpoint)
	}
	ents, err := t.ReadDir(ctx, dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w: %w", displayDir(dir), ErrNoCheckpoint, err)
		}
		return nil, err
	}
	d := dirIndex(ents)
	// The order matters where markers overlap: Trainer's output_dir can hold
	// a top-level trainer_state.json (save_state) beside its checkpoint-N
	// directories, and a Trainer checkpoint can hold DeepSpeed's `latest`.
	switch {
	case d.isDCP():
		return []candidate{dcpCandidate(t, dir, stepOf(path.Base(dir)))}, nil
	case d.hasDirs(hfCheckpointRE):
		return hfCandidates(t, dir, d), nil
	case d.hasFile(hfTrainerState):
		return []candidate{hfModelCandidate(t, dir, stepOf(path.Base(dir)))}, nil
	case d.isDeepSpeedRun():
		return deepspeedCandidates(ctx, t, dir, d)
	case d.isDeepSpeedTag():
		return []candidate{deepspeedTagCandidate(t, dir, "", stepOf(path.Base(dir)))}, nil
	case d.isRayRun():
		return rayCandidates(ctx, t, dir, d, depth)
	case d.isLightning():
		return lightningCandidates(t, dir, ents, depth), nil
	case d.isHFModel():
		return []candidate{hfModelCandidate(t, dir, stepOf(path.Base(dir)))}, nil
	}
	if cands, err := dcpSeriesCandidates(ctx, t, dir, d); err != nil || len(cands) > 0 {
		return cands, err
	}
	return nil, fmt.Errorf("%s: %w", displayDir(dir), errNoLayout)
}

// dirEntries indexes one directory's entries by name.
type dirEntries struct {
	files map[string]Entry
	dirs  map[string]Entry
}

func dirIndex(ents []Entry) dirEntries {
	d := dirEntries{files: map[string]Entry{}, dirs: map[string]Entry{}}
	for _, e := range ents {
		if e.IsDir {
			d.dirs[e.Name] = e
		} else {
			d.files[e.Name] = e
		}
	}
	return d
}

func (d dirEntries) hasFile(names ...string) bool {
	for _, n := range names {
		if _, ok := d.files[n]; ok {
			return true
		}
	}
	return false
}

func (d dirEntries) hasFileMatching(re *regexp.Regexp) bool {
	for n := range d.files {
		if re.MatchString(n) {
			return true
		}
	}
	return false
}

func (d dirEntries) hasDirs(re *regexp.Regexp) bool {
	for n := range d.dirs {
		if re.MatchString(n) {
			return true
		}
	}
	return false
}

var stepRE = regexp.MustCompile(`(\d+)$`)

// stepOf extracts the trailing number of a name (global_step300,
// checkpoint-300, step-30), or -1.
func stepOf(name string) int64 {
	m := stepRE.FindStringSubmatch(name)
	if m == nil {
		return -1
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// readMarker reads a small text marker file such as DeepSpeed's `latest`.
func readMarker(ctx context.Context, t Tree, name string, size int64) (string, error) {
	b, err := readSmall(ctx, t, name, size, 4096)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
