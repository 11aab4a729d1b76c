package prefetch

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// PyTorch Distributed Checkpoint (torch.distributed.checkpoint, "DCP").
//
// A DCP checkpoint is a directory: every save rank writes its items to
// __{rank}_{n}.distcp files, then the coordinator pickles the Metadata to
// .metadata.tmp and renames it to .metadata (FileSystemWriter.finish), so
// .metadata appears last and atomically.
//
// Complete means: .metadata exists (a directory with only .metadata.tmp is
// a save in progress), it unpickles to a Metadata whose storage_data maps
// every item to a file, and every such file exists and is at least as long
// as the furthest byte any item claims.
//
// A series of DCP checkpoints (torchtitan's step-N, or any numbered
// directories holding DCP files) is ordered by the number.

var (
	dcpFileRE   = regexp.MustCompile(`^__(\d+)_(\d+)\.distcp$`)
	dcpSeriesRE = regexp.MustCompile(`^(?:step|iter|iteration|epoch|ckpt|checkpoint)?[-_]?(\d+)$`)
)

const (
	dcpMetadata    = ".metadata"
	dcpMetadataTmp = ".metadata.tmp"
)

func isDCPFile(base string) bool {
	return base == dcpMetadata || base == dcpMetadataTmp || strings.HasSuffix(base, ".distcp")
}

func (d dirEntries) isDCP() bool {
	for n := range d.files {
		if isDCPFile(n) {
			return true
		}
	}
	return false
}

func dcpCandidate(t Tree, dir string, step int64) candidate {
	return candidate{layout: LayoutDCP, path: dir, step: step, check: func(ctx context.Context) ([]Entry, Layout, error) {
		files, err := walkChecked(ctx, t, dir)
		return files, LayoutDCP, err
	}}
}

// dcpSeriesCandidates recognises numbered subdirectories holding DCP files.
// Only the names are known from the listing, so the newest few are peeked
// at; the series is DCP if one of them holds DCP files.
func dcpSeriesCandidates(ctx context.Context, t Tree, dir string, d dirEntries) ([]candidate, error) {
	type numbered struct {
		name string
		n    int64
	}
	var dirs []numbered
	for name := range d.dirs {
		if m := dcpSeriesRE.FindStringSubmatch(name); m != nil {
			n, err := strconv.ParseInt(m[1], 10, 64)
			if err == nil {
				dirs = append(dirs, numbered{name, n})
			}
		}
	}
	sort.Slice(dirs, func(i, j int) bool {
		if dirs[i].n != dirs[j].n {
			return dirs[i].n > dirs[j].n
		}
		return dirs[i].name > dirs[j].name
	})
	isSeries := false
	for _, nd := range dirs[:min(3, len(dirs))] {
		ents, err := t.ReadDir(ctx, join(dir, nd.name))
		if err != nil {
			continue
		}
		if dirIndex(ents).isDCP() {
			isSeries = true
			break
		}
	}
	if !isSeries {
		return nil, nil
	}
	out := make([]candidate, 0, len(dirs))
	for _, nd := range dirs {
		out = append(out, dcpCandidate(t, join(dir, nd.name), nd.n))
	}
	return out, nil
}

// checkDCP verifies the DCP checkpoint in dir (files is a listing that
// includes dir's files) and returns its metadata.
func checkDCP(ctx context.Context, t Tree, dir string, files []Entry) (*DCPMetadata, error) {
	idx := newFileSet(files)
	mf, ok := idx[join(dir, dcpMetadata)]
	if !ok {
		if _, tmp := idx[join(dir, dcpMetadataTmp)]; tmp {
			return nil, fmt.Errorf("%s: %s without %s: save in progress: %w", displayDir(dir), dcpMetadataTmp, dcpMetadata, ErrIncomplete)
		}
		return nil, fmt.Errorf("%s: no %s (written last by DCP): %w", displayDir(dir), dcpMetadata, ErrIncomplete)
	}
	data, err := readSmall(ctx, t, mf.Name, mf.Size, maxDCPMetadata)
	if err != nil {
		return nil, err
	}
	md, err := ParseDCPMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mf.Name, err)
	}
	need := map[string]int64{}
	for _, it := range md.Items {
		need[it.Path] = max(need[it.Path], it.Off+it.Len)
	}
	for _, p := range sortedKeysInt(need) {
		f, ok := idx[join(dir, p)]
		switch {
		case !ok:
			return nil, fmt.Errorf("%s: storage file %s named by %s is missing: %w", displayDir(dir), p, dcpMetadata, ErrIncomplete)
		case f.Size < need[p]:
			return nil, fmt.Errorf("%s: storage file %s has %d bytes, %s needs %d: %w", displayDir(dir), p, f.Size, dcpMetadata, need[p], ErrIncomplete)
		}
	}
	return md, nil
}

func sortedKeysInt(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// dcpUnits plans the DCP checkpoint in dir: .metadata, then one range per
// storage item. It returns the files it accounted for.
//
// Rank awareness: DCP names storage files after the save rank
// (__{rank}_{n}.distcp). When the restoring world size equals the saving
// one (inferred as the highest rank in those names plus one), a restoring
// rank is assumed to own the same shards it saved — the common restart — so
// it needs the items in its own files, plus every item all ranks load:
// bytes items (non-tensor state) and tensors saved whole (replicated
// weights, deduplicated onto one rank at save). With a different world
// size the shards are redistributed and any rank may need any item, so
// every item is planned. Pipeline-parallel stages are not distinguished:
// a rank then also plans other stages' replicated tensors, which costs
// bandwidth, not correctness.
func dcpUnits(ctx context.Context, t Tree, dir string, files []Entry, opts PlanOptions) ([]Range, map[string]bool, error) {
	md, err := checkDCP(ctx, t, dir, files)
	if err != nil {
		return nil, nil, err
	}
	idx := newFileSet(files)
	meta := idx[join(dir, dcpMetadata)]
	used := map[string]bool{meta.Name: true}
	units := []Range{{Name: meta.Name, Off: 0, Len: meta.Size, Priority: PriorityMetadata}}

	saveRank := map[string]int{}
	savedWorld := 0
	for _, it := range md.Items {
		used[join(dir, it.Path)] = true
		m := dcpFileRE.FindStringSubmatch(it.Path)
		if m == nil {
			savedWorld = -1 // not FileSystemWriter's naming: cannot tell
			continue
		}
		r, err := strconv.Atoi(m[1])
		if err != nil {
			savedWorld = -1
			continue
		}
		saveRank[it.Path] = r
		if savedWorld >= 0 {
			savedWorld = max(savedWorld, r+1)
		}
	}
	byRank := opts.WorldSize > 1 && savedWorld == opts.WorldSize
	for _, it := range md.Items {
		if byRank && saveRank[it.Path] != opts.Rank && !md.Bytes[it.FQN] && !md.Tensors[it.FQN].Replicated() {
			continue
		}
		units = append(units, Range{Name: join(dir, it.Path), Off: it.Off, Len: it.Len, Priority: fqnPriority(it.FQN)})
	}
	return units, used, nil
}

// fqnPriority classifies a state-dict key: optimizer state (flattened by
// DCP as optim.* / optimizer.*) after model state.
func fqnPriority(fqn string) Priority {
	if strings.HasPrefix(strings.ToLower(fqn), "optim") {
		return PriorityOptimizer
	}
	return PriorityModel
}

// dcpDirs returns the directories among files that hold a .metadata.
func dcpDirs(files []Entry) []string {
	var out []string
	for _, f := range files {
		if path.Base(f.Name) == dcpMetadata {
			out = append(out, relDir(path.Dir(f.Name)))
		}
	}
	slices.Sort(out)
	return out
}
