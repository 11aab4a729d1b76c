package prefetch

import (
	"context"
	"errors"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestFindLatestFixtures runs discovery on every fixture scenario through
// both adapters: the newest complete checkpoint is chosen, the newer
// half-written ones are reported as incomplete, and the file list is
// exactly what the generator wrote.
func TestFindLatestFixtures(t *testing.T) {
	ctx := context.Background()
	for _, fc := range fixtureScenarios(t) {
		tree, sc := fc.tree, fc.sc
		{
			t.Run(fc.name, func(t *testing.T) {
				ck, err := FindLatest(ctx, tree, sc.Dir)
				if err != nil {
					t.Fatalf("FindLatest(%s): %v", sc.Dir, err)
				}
				if ck.Path != sc.Latest || ck.Layout != sc.Layout || ck.Step != sc.Step {
					t.Errorf("got %s %s step %d, want %s %s step %d", ck.Layout, ck.Path, ck.Step, sc.Layout, sc.Latest, sc.Step)
				}
				wantContent := sc.Content
				if wantContent == "" {
					wantContent = sc.Layout
				}
				if ck.Content != wantContent {
					t.Errorf("content %s, want %s", ck.Content, wantContent)
				}
				got := map[string]int64{}
				for _, f := range ck.Files {
					got[f.Name] = f.Size
				}
				if len(got) != len(sc.Files) {
					t.Errorf("%d files, want %d:\n got %v\nwant %v", len(got), len(sc.Files), got, sc.Files)
				}
				for f, size := range sc.Files {
					if got[f] != size {
						t.Errorf("file %s: size %d, want %d", f, got[f], size)
					}
				}
				if !slices.IsSortedFunc(ck.Files, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) }) {
					t.Errorf("Files not sorted")
				}

				cands, err := Candidates(ctx, tree, sc.Dir)
				if err != nil {
					t.Fatal(err)
				}
				pos := map[string]int{}
				for i, c := range cands {
					pos[c.Checkpoint.Path] = i
					if c.Checkpoint.Path == sc.Latest && c.Err != nil {
						t.Errorf("Candidates: chosen %s has error %v", sc.Latest, c.Err)
					}
				}
				for _, s := range sc.Skipped {
					i, ok := pos[s]
					if !ok {
						t.Errorf("half-written %s not among candidates", s)
						continue
					}
					if !errors.Is(cands[i].Err, ErrIncomplete) {
						t.Errorf("half-written %s: err %v, want ErrIncomplete", s, cands[i].Err)
					}
					if i > pos[sc.Latest] {
						t.Errorf("half-written %s listed after the older %s", s, sc.Latest)
					}
				}
			})
		}
	}
}

// expectedPlan derives the whole-checkpoint plan from the generator's
// records: safetensors files as header + data, DCP as .metadata + items,
// anything else whole.
func expectedPlan(sc scenario, rank, world int) []Range {
	var want []Range
	special := map[string]bool{}
	for _, st := range sc.Safetensors {
		special[st.File] = true
		want = append(want, Range{Name: st.File, Len: st.DataStart}, Range{Name: st.File, Off: st.DataStart, Len: st.Size - st.DataStart})
	}
	if len(sc.DCPItems) > 0 {
		dir := sc.Latest
		meta := dir + "/.metadata"
		special[meta] = true
		want = append(want, Range{Name: meta, Len: sc.Files[meta]})
		for _, it := range sc.DCPItems {
			special[dir+"/"+it.File] = true
			if world > 1 && it.Rank != rank && !it.Bytes && !it.Replicated {
				continue
			}
			want = append(want, Range{Name: dir + "/" + it.File, Off: it.Off, Len: it.Len})
		}
	}
	var names []string
	if world > 1 && sc.RankFiles != nil {
		names = sc.RankFiles[strconv.Itoa(rank)]
	} else {
		for f := range sc.Files {
			names = append(names, f)
		}
	}
	for _, f := range names {
		if !special[f] {
			want = append(want, Range{Name: f, Len: sc.Files[f]})
		}
	}
	return flat(want)
}

// TestPlanFixtures checks Plan against the generator's records, for the
// whole checkpoint and per rank.
func TestPlanFixtures(t *testing.T) {
	ctx := context.Background()
	for _, fc := range fixtureScenarios(t) {
		tree, sc := fc.tree, fc.sc
		{
			t.Run(fc.name, func(t *testing.T) {
				ck, err := FindLatest(ctx, tree, sc.Dir)
				if err != nil {
					t.Fatal(err)
				}
				worlds := []int{1}
				if sc.RankFiles != nil || sc.DCPItems != nil {
					worlds = append(worlds, 2)
				}
				for _, world := range worlds {
					for rank := 0; rank < world; rank++ {
						got, err := Plan(ctx, tree, ck, PlanOptions{Rank: rank, WorldSize: world})
						if err != nil {
							t.Fatalf("rank %d/%d: %v", rank, world, err)
						}
						if want := expectedPlan(sc, rank, world); !slices.Equal(flat(got), want) {
							t.Errorf("rank %d/%d plan:\n%s\nwant:\n%s", rank, world, fmtRanges(got), fmtRanges(want))
						}
						if !slices.IsSortedFunc(got, compareRanges) {
							t.Errorf("plan not sorted by priority:\n%s", fmtRanges(got))
						}
					}
				}
			})
		}
	}
}

// TestPlanPriorities pins the priority of representative files.
func TestPlanPriorities(t *testing.T) {
	tree := fixtureTrees(t)["dir"]
	ctx := context.Background()
	prio := func(dir string) map[string]Priority {
		ck, err := FindLatest(ctx, tree, dir)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := Plan(ctx, tree, ck, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]Priority{}
		for _, r := range rs {
			k := path.Base(r.Name)
			if p, ok := out[k]; !ok || r.Priority < p {
				out[k] = r.Priority
			}
		}
		return out
	}
	hf := prio("hf")
	ds := prio("deepspeed")
	dcp := prio("dcp")
	for _, c := range []struct {
		got  Priority
		want Priority
		what string
	}{
		{hf["trainer_state.json"], PriorityMetadata, "trainer_state.json"},
		{hf["model.safetensors.index.json"], PriorityMetadata, "index"},
		{hf["model-00001-of-00002.safetensors"], PriorityMetadata, "safetensors header"},
		{hf["optimizer.pt"], PriorityOptimizer, "optimizer.pt"},
		{hf["rng_state_0.pth"], PriorityOther, "rng state"},
		{ds["latest"], PriorityMetadata, "latest"},
		{ds["mp_rank_00_model_states.pt"], PriorityModel, "model states"},
		{ds["zero_pp_rank_0_mp_rank_00_optim_states.pt"], PriorityOptimizer, "optim states"},
		{dcp[".metadata"], PriorityMetadata, ".metadata"},
	} {
		if c.got != c.want {
			t.Errorf("%s: priority %s, want %s", c.what, c.got, c.want)
		}
	}
}

// TestPlanPartsFixtures: for every scenario, splitting between fetchers
// gives disjoint parts whose union is exactly the unsplit plan.
func TestPlanPartsFixtures(t *testing.T) {
	ctx := context.Background()
	for _, fc := range fixtureScenarios(t) {
		if !strings.Contains(fc.name, "/dir/") {
			continue // the split depends on the plan, not on the adapter
		}
		tree, sc := fc.tree, fc.sc
		ck, err := FindLatest(ctx, tree, sc.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range []int64{0, 64, 4096} {
			for _, parts := range []int{2, 3, 8} {
				for _, world := range []int{1, 2} {
					checkParts(t, tree, ck, PlanOptions{Rank: world - 1, WorldSize: world, Parts: parts, BlockSize: block})
				}
			}
		}
	}
}

func checkParts(t *testing.T, tree Tree, ck Checkpoint, opts PlanOptions) {
	t.Helper()
	ctx := context.Background()
	whole := opts
	whole.Part, whole.Parts, whole.BlockSize = 0, 0, 0
	all, err := Plan(ctx, tree, ck, whole)
	if err != nil {
		t.Fatal(err)
	}
	want := bytesOf(all)
	seen := map[string]map[int64]int{}
	for p := 0; p < opts.Parts; p++ {
		o := opts
		o.Part = p
		rs, err := Plan(ctx, tree, ck, o)
		if err != nil {
			t.Fatal(err)
		}
		for f, offs := range bytesOf(rs) {
			if seen[f] == nil {
				seen[f] = map[int64]int{}
			}
			for off, n := range offs {
				seen[f][off] += n
			}
		}
		if opts.BlockSize > 0 {
			for _, r := range rs {
				if r.Off%opts.BlockSize != 0 && !startsUnit(all, r) {
					t.Errorf("%s %+v: part range starts mid-block at %d", ck.Path, opts, r.Off)
				}
			}
		}
	}
	for f, offs := range want {
		for off := range offs {
			if seen[f][off] != 1 {
				t.Fatalf("%s %+v: byte %s@%d fetched %d times, want once", ck.Path, opts, f, off, seen[f][off])
			}
		}
	}
	for f, offs := range seen {
		for off := range offs {
			if want[f][off] == 0 {
				t.Fatalf("%s %+v: byte %s@%d is not in the unsplit plan", ck.Path, opts, f, off)
			}
		}
	}
}

// startsUnit reports whether r starts where a range of the unsplit plan
// starts (a range need not begin on a block boundary).
func startsUnit(all []Range, r Range) bool {
	for _, a := range all {
		if a.Name == r.Name && a.Off == r.Off {
			return true
		}
	}
	return false
}

// TestSafetensorsFixtures: the Go parser reads back exactly what the
// Python writer recorded.
func TestSafetensorsFixtures(t *testing.T) {
	ctx := context.Background()
	n := 0
	for _, set := range fixtureSets {
		tree := fixtureTreesAt(t, set)["dir"]
		for _, sc := range loadManifestAt(t, set).Scenarios {
			for _, st := range sc.Safetensors {
				h, err := ReadSafetensors(ctx, tree, st.File, st.Size)
				if err != nil {
					t.Fatal(err)
				}
				if h.DataStart() != st.DataStart || h.FileSize() != st.Size || h.DataStart()%8 != 0 {
					t.Errorf("%s: data start %d size %d, want %d %d (8-aligned)", st.File, h.DataStart(), h.FileSize(), st.DataStart, st.Size)
				}
				if h.Metadata["format"] != "pt" {
					t.Errorf("%s: metadata %v", st.File, h.Metadata)
				}
				got := map[string][2]int64{}
				for _, tn := range h.Tensors {
					off, l := h.TensorRange(tn)
					got[tn.Name] = [2]int64{off, l}
				}
				if len(got) != len(st.Tensors) {
					t.Errorf("%s: %d tensors, want %d", st.File, len(got), len(st.Tensors))
				}
				for _, want := range st.Tensors {
					if got[want.Tensor] != [2]int64{want.Off, want.Len} {
						t.Errorf("%s %s: range %v, want [%d %d]", st.File, want.Tensor, got[want.Tensor], want.Off, want.Len)
					}
					n++
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no safetensors fixtures")
	}
}

// TestDCPMetadataFixture: the unpickler maps the generator's .metadata to
// exactly the items it recorded.
//
// model.layer.weight is sharded in two along dim 0 in both sets: a 4×4
// tensor by the stand-in generator, and nn.Linear(8, 8) by FSDP2's
// fully_shard on two ranks in the real one.
func TestDCPMetadataFixture(t *testing.T) {
	for _, c := range []struct {
		set        string
		size, half []int64
	}{
		{fixtureDir, []int64{4, 4}, []int64{2, 4}},
		{realFixtureDir, []int64{8, 8}, []int64{4, 8}},
	} {
		t.Run(filepath.Base(c.set), func(t *testing.T) { checkDCPMetadataFixture(t, c.set, c.size, c.half) })
	}
}

func checkDCPMetadataFixture(t *testing.T, set string, size, half []int64) {
	sc := loadManifestAt(t, set).Scenarios["dcp"]
	tree := fixtureTreesAt(t, set)["dir"]
	ctx := context.Background()
	meta := sc.Latest + "/.metadata"
	data, err := readSmall(ctx, tree, meta, sc.Files[meta], maxDCPMetadata)
	if err != nil {
		t.Fatal(err)
	}
	md, err := ParseDCPMetadata(data)
	if err != nil {
		t.Fatal(err)
	}
	if md.Version != "1.0.0" {
		t.Errorf("version %q", md.Version)
	}
	if len(md.Items) != len(sc.DCPItems) {
		t.Fatalf("%d items, want %d", len(md.Items), len(sc.DCPItems))
	}
	type key struct {
		fqn, file string
		off, n    int64
	}
	got := map[key]bool{}
	for _, it := range md.Items {
		got[key{it.FQN, it.Path, it.Off, it.Len}] = true
	}
	for _, it := range sc.DCPItems {
		if !got[key{it.FQN, it.File, it.Off, it.Len}] {
			t.Errorf("item %+v missing", it)
		}
		switch {
		case it.Bytes && !md.Bytes[it.FQN]:
			t.Errorf("%s should be a bytes item", it.FQN)
		case !it.Bytes && md.Tensors[it.FQN].Replicated() != it.Replicated:
			t.Errorf("%s: replicated %v, want %v", it.FQN, md.Tensors[it.FQN].Replicated(), it.Replicated)
		}
	}
	w := md.Tensors["model.layer.weight"]
	if w.DType != "float32" || !slices.Equal(w.Size, size) || len(w.Chunks) != 2 ||
		!slices.Equal(w.Chunks[1].Offsets, []int64{half[0], 0}) || !slices.Equal(w.Chunks[1].Sizes, half) {
		t.Errorf("model.layer.weight: %+v", w)
	}
}

// TestMalformedFixtures: hostile or broken DCP metadata gives clear errors.
func TestMalformedFixtures(t *testing.T) {
	ctx := context.Background()
	for treeName, tree := range fixtureTrees(t) {
		for _, c := range []struct {
			dir      string
			sentinel error
			text     string
		}{
			{"malformed/dcp-evil", ErrMalformed, "unexpected class posix.system"},
			{"malformed/dcp-json", ErrMalformed, "not a pickle"},
			{"malformed/dcp-dict", ErrMalformed, "not Metadata"},
			{"malformed/dcp-short", ErrIncomplete, "__0_0.distcp has 100 bytes"},
		} {
			t.Run(treeName+"/"+path.Base(c.dir), func(t *testing.T) {
				_, err := FindLatest(ctx, tree, c.dir)
				if !errors.Is(err, ErrNoCheckpoint) || !errors.Is(err, c.sentinel) || !strings.Contains(err.Error(), c.text) {
					t.Fatalf("FindLatest: %v, want ErrNoCheckpoint and %v mentioning %q", err, c.sentinel, c.text)
				}
				// Planning a checkpoint handed in by hand fails the same way.
				_, err = Plan(ctx, tree, Checkpoint{Path: c.dir}, PlanOptions{})
				if !errors.Is(err, c.sentinel) {
					t.Fatalf("Plan: %v, want %v", err, c.sentinel)
				}
			})
		}
	}
}
