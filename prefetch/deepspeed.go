package prefetch

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
)

// DeepSpeed (engine.save_checkpoint).
//
// A save directory holds one directory per tag (global_step{N} by default)
// and a `latest` file that rank 0 writes with the tag after every rank has
// finished saving; deepspeed's load_checkpoint(tag=None) reads it. A tag
// directory holds mp_rank_{mp:02d}_model_states.pt per model-parallel rank
// (ZeRO-3: zero_pp_rank_{dp}_mp_rank_{mp:02d}_model_states.pt per rank),
// zero_pp_rank_{dp}_mp_rank_{mp:02d}_optim_states.pt per data-parallel rank
// (bf16_ prefixed with the bf16 optimizer), and for pipeline parallelism
// layer_{l:02d}-model_{mp:02d}-model_states.pt.
//
// Complete means: the tag directory has model states, the model-parallel
// ranks are 0..M-1 without gaps, every model-parallel rank has the same
// data-parallel ranks 0..D-1 without gaps, and every .pt file ends with its
// zip end record (torch.save finished).
//
// Which tag: the one `latest` names. Tags newer than it are saves that have
// not been committed and are skipped. If the named tag is incomplete, the
// newest complete older tag is used; if it does not exist at all, `latest`
// is stale and the newest complete tag of any step is used. Without
// `latest`, the newest complete global_step{N}.

var (
	dsStepRE  = regexp.MustCompile(`^global_step(\d+)$`)
	dsModelRE = regexp.MustCompile(`^mp_rank_(\d+)_model_states\.pt$`)
	dsZeroRE  = regexp.MustCompile(`^(?:bf16_|fp16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_(model|optim)_states\.pt$`)
	dsLayerRE = regexp.MustCompile(`^layer_\d+-model_(\d+)-model_states\.pt$`)
)

const dsLatest = "latest"

func (d dirEntries) isDeepSpeedRun() bool {
	return d.hasFile(dsLatest) && len(d.dirs) > 0 || d.hasDirs(dsStepRE)
}

func (d dirEntries) isDeepSpeedTag() bool {
	return d.hasFileMatching(dsModelRE) || d.hasFileMatching(dsZeroRE) || d.hasFileMatching(dsLayerRE)
}

func deepspeedCandidates(ctx context.Context, t Tree, dir string, d dirEntries) ([]candidate, error) {
	latestFile := ""
	tag := ""
	if f, ok := d.files[dsLatest]; ok {
		latestFile = join(dir, dsLatest)
		s, err := readMarker(ctx, t, latestFile, f.Size)
		if err != nil {
			return nil, err
		}
		if s != "" && fs.ValidPath(s) && path.Base(s) == s {
			tag = s
		} else {
			latestFile = "" // unusable marker; do not plan it either
		}
	}
	type tagDir struct {
		name string
		step int64
	}
	var tags []tagDir
	for name := range d.dirs {
		if m := dsStepRE.FindStringSubmatch(name); m != nil {
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				tags = append(tags, tagDir{name, n})
			}
		}
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].step > tags[j].step })

	if tag == "" {
		out := make([]candidate, 0, len(tags))
		for _, td := range tags {
			out = append(out, deepspeedTagCandidate(t, join(dir, td.name), "", td.step))
		}
		return out, nil
	}
	// Newest first: tags newer than `latest` (skipped: not committed), the
	// tag `latest` names, then older tags as fallbacks. A `latest` naming a
	// missing directory is stale and commits nothing.
	named := deepspeedTagCandidate(t, join(dir, tag), latestFile, stepOf(tag))
	_, exists := d.dirs[tag]
	if !exists {
		named.skip = fmt.Errorf("%s names tag %q, which does not exist: %w", latestFile, tag, ErrIncomplete)
	}
	latestStep := int64(-1)
	if exists && dsStepRE.MatchString(tag) {
		latestStep = stepOf(tag)
	}
	var newer, older []candidate
	for _, td := range tags {
		if td.name == tag {
			continue
		}
		c := deepspeedTagCandidate(t, join(dir, td.name), latestFile, td.step)
		if latestStep >= 0 && td.step > latestStep {
			c.skip = fmt.Errorf("newer than tag %q in %s: save not committed: %w", tag, latestFile, ErrIncomplete)
			newer = append(newer, c)
			continue
		}
		older = append(older, c)
	}
	out := append(newer, named)
	out = append(out, older...)
	return out, nil
}

// deepspeedTagCandidate checks one tag directory; latestFile ("" if none)
// is planned with it.
func deepspeedTagCandidate(t Tree, dir, latestFile string, step int64) candidate {
	return candidate{layout: LayoutDeepSpeed, path: dir, step: step, check: func(ctx context.Context) ([]Entry, Layout, error) {
		files, err := walk(ctx, t, dir)
		if err != nil {
			return nil, LayoutDeepSpeed, err
		}
		if err := checkDeepSpeedTag(dir, files); err != nil {
			return files, LayoutDeepSpeed, err
		}
		if err := checkFiles(ctx, t, files); err != nil {
			return files, LayoutDeepSpeed, err
		}
		if latestFile != "" {
			e, err := t.Stat(ctx, latestFile)
			if err != nil {
				return files, LayoutDeepSpeed, err
			}
			e.Name = latestFile
			files = append([]Entry{e}, files...)
			sortEntries(files)
		}
		return files, LayoutDeepSpeed, nil
	}}
}

// checkDeepSpeedTag checks the file names of tag directory dir.
func checkDeepSpeedTag(dir string, files []Entry) error {
	mp := map[int]bool{}
	dp := map[int]map[int]bool{} // mp rank -> dp ranks (optim files)
	hasModel := false
	for _, f := range under(files, dir) {
		base := path.Base(f.Name)
		if m := dsModelRE.FindStringSubmatch(base); m != nil {
			hasModel = true
			mp[atoi(m[1])] = true
		} else if m := dsLayerRE.FindStringSubmatch(base); m != nil {
			hasModel = true
		} else if m := dsZeroRE.FindStringSubmatch(base); m != nil {
			r, p := atoi(m[1]), atoi(m[2])
			mp[p] = true
			if m[3] == "model" {
				hasModel = true
				continue
			}
			if dp[p] == nil {
				dp[p] = map[int]bool{}
			}
			dp[p][r] = true
		}
	}
	if !hasModel {
		return fmt.Errorf("%s: no *model_states.pt: %w", displayDir(dir), ErrIncomplete)
	}
	if n, ok := contiguous(mp); !ok {
		return fmt.Errorf("%s: model-parallel ranks have a gap below %d: %w", displayDir(dir), n, ErrIncomplete)
	}
	// Every model-parallel rank has the same data-parallel shards 0..D-1;
	// report the first (in rank order) that has fewer.
	want := 0
	for p := range mp {
		want = max(want, len(dp[p]))
	}
	for p := range len(mp) {
		if n, ok := contiguous(dp[p]); !ok || n != want {
			return fmt.Errorf("%s: optimizer shards of mp_rank_%02d incomplete (%d of %d): %w", displayDir(dir), p, len(dp[p]), want, ErrIncomplete)
		}
	}
	return nil
}

// contiguous reports whether set is {0..n-1}, and n.
func contiguous(set map[int]bool) (int, bool) {
	for i := 0; i < len(set); i++ {
		if !set[i] {
			return len(set), false
		}
	}
	return len(set), true
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// deepspeedUnits plans the tag directory dir.
//
// Rank awareness: with mp model-parallel ranks and dp data-parallel ranks
// saved, and a restoring world of mp×dp ranks, rank r is taken to be
// model-parallel rank r%mp and data-parallel rank r/mp (Megatron's order,
// tensor parallelism innermost) and reads mp_rank_{mp}_model_states.pt and
// its own zero_pp_rank_{dp}_mp_rank_{mp}_* files. With any other world size
// DeepSpeed re-partitions ZeRO state by reading every shard, so every file
// is planned. Pipeline layer files and anything else are planned for
// every rank.
func deepspeedUnits(dir string, files []Entry, opts PlanOptions) ([]Range, map[string]bool) {
	ents := under(files, dir)
	mps, dps := 0, 0
	for _, f := range ents {
		base := path.Base(f.Name)
		if m := dsModelRE.FindStringSubmatch(base); m != nil {
			mps = max(mps, atoi(m[1])+1)
		} else if m := dsZeroRE.FindStringSubmatch(base); m != nil {
			dps = max(dps, atoi(m[1])+1)
			mps = max(mps, atoi(m[2])+1)
		}
	}
	byRank := opts.WorldSize > 1 && dps > 0 && mps*dps == opts.WorldSize
	myMP, myDP := 0, 0
	if byRank {
		myMP, myDP = opts.Rank%mps, opts.Rank/mps
	}
	var units []Range
	used := map[string]bool{}
	for _, f := range ents {
		base := path.Base(f.Name)
		m1 := dsModelRE.FindStringSubmatch(base)
		m2 := dsZeroRE.FindStringSubmatch(base)
		if m1 == nil && m2 == nil {
			continue // left to the generic planner
		}
		used[f.Name] = true
		prio := PriorityModel
		if m2 != nil && m2[3] == "optim" {
			prio = PriorityOptimizer
		}
		if byRank {
			if m1 != nil && atoi(m1[1]) != myMP {
				continue
			}
			if m2 != nil && (atoi(m2[1]) != myDP || atoi(m2[2]) != myMP) {
				continue
			}
		}
		units = append(units, Range{Name: f.Name, Len: f.Size, Priority: prio})
	}
	return units, used
}

// deepspeedDirs returns the directories among files that hold model states.
func deepspeedDirs(files []Entry) []string {
	set := map[string]bool{}
	for _, f := range files {
		base := path.Base(f.Name)
		if dsModelRE.MatchString(base) || dsZeroRE.MatchString(base) {
			set[relDir(path.Dir(f.Name))] = true
		}
	}
	return sortedKeys(set)
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
}
