package prefetch

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// PlanOptions say whose reads to plan and how to share the fetching.
// The zero value plans the whole checkpoint for one fetcher.
type PlanOptions struct {
	// Rank and WorldSize describe the restoring job: with WorldSize > 1,
	// Plan returns only the bytes rank Rank will read where the layout says
	// so (DeepSpeed ZeRO shards, DCP per-rank files, per-rank RNG and
	// rank-numbered files); bytes every rank reads (model weights of a Hugging
	// Face or Lightning checkpoint) are planned for every rank, because each
	// node's cache needs its own copy. WorldSize <= 1 plans everything.
	Rank, WorldSize int
	// Part and Parts split that plan between Parts cooperating fetchers
	// that fill one cache (say the local ranks of a node): Plan returns part
	// Part of a deterministic split; the parts are disjoint and together are
	// exactly the Parts <= 1 plan. The unit of the split is a tensor of a
	// safetensors file, an item of a DCP checkpoint, or a whole file.
	Part, Parts int
	// BlockSize, when set with Parts > 1, makes the unit of the split a
	// BlockSize-aligned piece of a file instead, so that no two fetchers
	// fetch the same cache block; set it to the cache's block size.
	BlockSize int64
}

// Validate checks the options' ranges.
func (o PlanOptions) Validate() error {
	switch {
	case o.WorldSize < 0, o.Rank < 0, o.WorldSize <= 1 && o.Rank > 0, o.WorldSize > 1 && o.Rank >= o.WorldSize:
		return fmt.Errorf("rank %d of world size %d: %w", o.Rank, o.WorldSize, ErrBadOptions)
	case o.Parts < 0, o.Part < 0, o.Parts <= 1 && o.Part > 0, o.Parts > 1 && o.Part >= o.Parts:
		return fmt.Errorf("part %d of %d: %w", o.Part, o.Parts, ErrBadOptions)
	case o.BlockSize < 0:
		return fmt.Errorf("block size %d: %w", o.BlockSize, ErrBadOptions)
	}
	return nil
}

// Plan returns the byte ranges to fetch for ck: sorted by Priority, then
// file and offset, coalesced, every range inside one of ck.Files.
//
// By default whole files. Where a layout says more, Plan uses it: a
// safetensors file is planned as its header (PriorityMetadata) and its
// tensors; a DCP checkpoint as .metadata and its storage items; DeepSpeed,
// DCP and rank-numbered files are narrowed to opts.Rank as PlanOptions
// describes. A Checkpoint without Files (built by hand) is listed from
// ck.Path first.
func Plan(ctx context.Context, t Tree, ck Checkpoint, opts PlanOptions) ([]Range, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	files := ck.Files
	if len(files) == 0 {
		p, err := cleanName(ck.Path)
		if err != nil {
			return nil, err
		}
		e, err := t.Stat(ctx, p)
		if err != nil {
			return nil, err
		}
		if e.IsDir {
			if files, err = walk(ctx, t, p); err != nil {
				return nil, err
			}
		} else {
			e.Name = p
			files = []Entry{e}
		}
	}
	units, err := planUnits(ctx, t, files, opts)
	if err != nil {
		return nil, err
	}
	if opts.Parts > 1 && opts.BlockSize > 0 {
		units = SplitBlocks(Coalesce(units), opts.BlockSize)
	}
	return Coalesce(share(units, opts.Part, opts.Parts)), nil
}

// planUnits returns the plan at the finest granularity: one Range per
// tensor, DCP item or whole file.
func planUnits(ctx context.Context, t Tree, files []Entry, opts PlanOptions) ([]Range, error) {
	var units []Range
	used := map[string]bool{}
	for _, d := range dcpDirs(files) {
		u, got, err := dcpUnits(ctx, t, d, files, opts)
		if err != nil {
			return nil, err
		}
		units = append(units, u...)
		for k := range got {
			used[k] = true
		}
	}
	for _, d := range deepspeedDirs(files) {
		u, got := deepspeedUnits(d, files, opts)
		units = append(units, u...)
		for k := range got {
			used[k] = true
		}
	}
	var rest []Entry
	for _, f := range files {
		if !used[f.Name] && !strings.HasSuffix(f.Name, ".tmp") {
			rest = append(rest, f)
		}
	}
	for _, f := range ownFiles(rest, opts) {
		if !strings.HasSuffix(f.Name, ".safetensors") {
			units = append(units, Range{Name: f.Name, Len: f.Size, Priority: filePriority(f.Name)})
			continue
		}
		h, err := ReadSafetensors(ctx, t, f.Name, f.Size)
		if err != nil {
			return nil, err
		}
		units = append(units, Range{Name: f.Name, Len: h.DataStart(), Priority: PriorityMetadata})
		prio := filePriority(f.Name)
		for _, tn := range h.Tensors {
			off, n := h.TensorRange(tn)
			units = append(units, Range{Name: f.Name, Off: off, Len: n, Priority: prio})
		}
	}
	return units, nil
}

// rankNameRE finds a rank number in a file name: rng_state_3.pth
// (Trainer), model-rank=3.pt (Ray Train's documented pattern), rank_3,
// rank3.
var rankNameRE = regexp.MustCompile(`(?i)(rank|rng_state)([_=-]?)(\d+)`)

// ownFiles drops files that belong to other ranks: files whose names
// differ only by a rank number form a family, and when a family's numbers
// are exactly 0..WorldSize-1, rank r reads only its own member (as
// Trainer does with rng_state_{r}.pth). Any other family is kept whole.
func ownFiles(files []Entry, opts PlanOptions) []Entry {
	if opts.WorldSize <= 1 {
		return files
	}
	type member struct {
		i    int
		rank int
	}
	families := map[string][]member{}
	for i, f := range files {
		base := path.Base(f.Name)
		m := rankNameRE.FindStringSubmatchIndex(base)
		if m == nil {
			continue
		}
		r, err := strconv.Atoi(base[m[6]:m[7]])
		if err != nil {
			continue
		}
		key := path.Dir(f.Name) + "/" + base[:m[6]] + "{}" + base[m[7]:]
		families[key] = append(families[key], member{i, r})
	}
	drop := map[int]bool{}
	for _, ms := range families {
		ranks := map[int]bool{}
		for _, m := range ms {
			ranks[m.rank] = true
		}
		if n, ok := contiguous(ranks); !ok || n != opts.WorldSize || len(ms) != n {
			continue
		}
		for _, m := range ms {
			if m.rank != opts.Rank {
				drop[m.i] = true
			}
		}
	}
	out := make([]Entry, 0, len(files))
	for i, f := range files {
		if !drop[i] {
			out = append(out, f)
		}
	}
	return out
}

// filePriority classifies a whole file by name.
func filePriority(name string) Priority {
	base := strings.ToLower(path.Base(name))
	switch ext := path.Ext(base); {
	case base == dsLatest || base == dcpMetadata || ext == ".json" || ext == ".yaml" || ext == ".yml" || ext == ".txt":
		return PriorityMetadata
	case strings.Contains(base, "optim"):
		return PriorityOptimizer
	case strings.Contains(base, "model") || ext == ".safetensors" || ext == ".ckpt" || ext == ".distcp":
		return PriorityModel
	}
	return PriorityOther
}
