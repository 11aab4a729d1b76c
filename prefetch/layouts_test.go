package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// names returns the base names of the files a plan touches, sorted.
func planNames(t *testing.T, tree Tree, ck Checkpoint, opts PlanOptions) []string {
	t.Helper()
	rs, err := Plan(context.Background(), tree, ck, opts)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, r := range rs {
		set[strings.TrimPrefix(r.Name, ck.Path+"/")] = true
	}
	return sortedKeys(set)
}

func mustPlan(t *testing.T, tree Tree, ck Checkpoint) []Range {
	t.Helper()
	rs, err := Plan(context.Background(), tree, ck, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func mustFind(t *testing.T, tree Tree, dir string) Checkpoint {
	t.Helper()
	ck, err := FindLatest(context.Background(), tree, dir)
	if err != nil {
		t.Fatalf("FindLatest(%s): %v", dir, err)
	}
	return ck
}

func dsTag(t *testing.T, m *memTree, dir string, mp, dp int, prefix string) {
	for p := 0; p < mp; p++ {
		m.add(fmt.Sprintf("%s/mp_rank_%02d_model_states.pt", dir, p), torchZip(t, "model"))
		for r := 0; r < dp; r++ {
			m.add(fmt.Sprintf("%s/%szero_pp_rank_%d_mp_rank_%02d_optim_states.pt", dir, prefix, r, p), torchZip(t, "optim"))
		}
	}
}

func TestDeepSpeedRules(t *testing.T) {
	t.Run("stale latest falls back to newest complete", func(t *testing.T) {
		m := newMemTree().add("run/latest", []byte("global_step50"))
		dsTag(t, m, "run/global_step30", 1, 2, "")
		dsTag(t, m, "run/global_step40", 1, 2, "")
		if ck := mustFind(t, m, "run"); ck.Path != "run/global_step40" {
			t.Errorf("got %s", ck.Path)
		}
	})
	t.Run("no latest: newest complete", func(t *testing.T) {
		m := newMemTree()
		dsTag(t, m, "run/global_step9", 1, 1, "bf16_")
		dsTag(t, m, "run/global_step10", 1, 1, "bf16_")
		m.add("run/global_step11/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", torchZip(t, "optim"))
		ck := mustFind(t, m, "run")
		if ck.Path != "run/global_step10" || ck.Step != 10 {
			t.Errorf("got %s step %d", ck.Path, ck.Step)
		}
	})
	t.Run("unusable latest is ignored", func(t *testing.T) {
		m := newMemTree().add("run/latest", []byte("../../etc"))
		dsTag(t, m, "run/global_step1", 1, 1, "")
		if ck := mustFind(t, m, "run"); ck.Path != "run/global_step1" || len(ck.Files) != 2 {
			t.Errorf("got %s %v", ck.Path, ck.Files)
		}
	})
	t.Run("custom tag", func(t *testing.T) {
		m := newMemTree().add("run/latest", []byte("best\n"))
		dsTag(t, m, "run/best", 1, 1, "")
		dsTag(t, m, "run/global_step99", 1, 1, "")
		if ck := mustFind(t, m, "run"); ck.Path != "run/best" {
			t.Errorf("got %s", ck.Path)
		}
	})
	for _, c := range []struct {
		name  string
		build func(m *memTree)
		text  string
	}{
		{"optimizer shard gap", func(m *memTree) {
			dsTag(t, m, "run/global_step1", 1, 3, "")
			delete(m.files, "run/global_step1/zero_pp_rank_1_mp_rank_00_optim_states.pt")
		}, "optimizer shards of mp_rank_00"},
		{"model-parallel gap", func(m *memTree) {
			dsTag(t, m, "run/global_step1", 2, 1, "")
			delete(m.files, "run/global_step1/mp_rank_00_model_states.pt")
			m.add("run/global_step1/layer_01-model_00-model_states.pt", torchZip(t, "layer"))
			delete(m.files, "run/global_step1/zero_pp_rank_0_mp_rank_00_optim_states.pt")
		}, "model-parallel ranks have a gap"},
		{"unequal shards per mp rank", func(m *memTree) {
			dsTag(t, m, "run/global_step1", 2, 2, "")
			delete(m.files, "run/global_step1/zero_pp_rank_1_mp_rank_01_optim_states.pt")
		}, "optimizer shards of mp_rank_01"},
		{"truncated model states", func(m *memTree) {
			dsTag(t, m, "run/global_step1", 1, 1, "")
			f := m.files["run/global_step1/mp_rank_00_model_states.pt"]
			m.files["run/global_step1/mp_rank_00_model_states.pt"] = f[:len(f)-10]
		}, "without its end record"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMemTree()
			c.build(m)
			_, err := FindLatest(context.Background(), m, "run")
			if !errors.Is(err, ErrNoCheckpoint) || !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want incomplete: %q", err, c.text)
			}
		})
	}
	t.Run("rank mapping with model parallelism", func(t *testing.T) {
		m := newMemTree().add("run/latest", []byte("global_step5"))
		dsTag(t, m, "run/global_step5", 2, 2, "")
		m.add("run/global_step5/layer_00-model_00-model_states.pt", torchZip(t, "layer"))
		ck := mustFind(t, m, "run")
		got := planNames(t, m, ck, PlanOptions{Rank: 3, WorldSize: 4})
		want := []string{"run/latest", "layer_00-model_00-model_states.pt", "mp_rank_01_model_states.pt", "zero_pp_rank_1_mp_rank_01_optim_states.pt"}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("rank 3 of 4: %v, want %v", got, want)
		}
		// Another world size re-partitions ZeRO state: every file.
		if got := planNames(t, m, ck, PlanOptions{Rank: 1, WorldSize: 8}); len(got) != len(ck.Files) {
			t.Errorf("rank 1 of 8: %v, want all %d files", got, len(ck.Files))
		}
	})
}

func TestHFRules(t *testing.T) {
	st := func(t *testing.T) []byte { return safetensorsFile(t, "w", "F32", []int64{4}) }
	base := func(t *testing.T, dir string) *memTree {
		return newMemTree().
			add(dir+"/model.safetensors", st(t)).
			add(dir+"/optimizer.pt", torchZip(t, "optim")).
			add(dir+"/trainer_state.json", []byte(`{"global_step": 1}`))
	}
	for _, c := range []struct {
		name  string
		build func(m *memTree)
		text  string
	}{
		{"torn trainer_state.json", func(m *memTree) { m.add("out/checkpoint-1/trainer_state.json", []byte(`{"global_st`)) }, "torn write"},
		{"truncated safetensors", func(m *memTree) {
			f := m.files["out/checkpoint-1/model.safetensors"]
			m.files["out/checkpoint-1/model.safetensors"] = f[:len(f)-1]
		}, "of the"},
		{"index names a missing shard", func(m *memTree) {
			m.add("out/checkpoint-1/model.safetensors.index.json", []byte(`{"weight_map":{"w":"model.safetensors","v":"model-00002-of-00002.safetensors"}}`))
		}, "model-00002-of-00002.safetensors, which is missing"},
		{"index escapes", func(m *memTree) {
			m.add("out/checkpoint-1/model.safetensors.index.json", []byte(`{"weight_map":{"w":"../model.safetensors"}}`))
		}, "not a file beside the index"},
		{"no weights", func(m *memTree) { delete(m.files, "out/checkpoint-1/model.safetensors") }, "no model weights"},
		{"nested FSDP DCP save in progress", func(m *memTree) {
			m.add("out/checkpoint-1/pytorch_model_fsdp_0/.metadata.tmp", []byte("x")).
				add("out/checkpoint-1/pytorch_model_fsdp_0/__0_0.distcp", []byte("x"))
		}, ".metadata.tmp without .metadata"},
		{"nested DeepSpeed without model states", func(m *memTree) {
			m.add("out/checkpoint-1/latest", []byte("global_step1")).
				add("out/checkpoint-1/global_step1/zero_pp_rank_0_mp_rank_00_model_states.pt", torchZip(t, "m")).
				add("out/checkpoint-1/global_step1/zero_pp_rank_0_mp_rank_00_optim_states.pt", torchZip(t, "o")).
				add("out/checkpoint-1/global_step1/zero_pp_rank_2_mp_rank_00_optim_states.pt", torchZip(t, "o"))
		}, "optimizer shards"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := base(t, "out/checkpoint-1")
			c.build(m)
			_, err := FindLatest(context.Background(), m, "out")
			if !errors.Is(err, ErrNoCheckpoint) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want %q", err, c.text)
			}
		})
	}
	t.Run("numeric order, staging dirs and final save ignored", func(t *testing.T) {
		m := base(t, "out/checkpoint-9")
		for k, v := range base(t, "out/checkpoint-10").files {
			m.add(k, v)
		}
		m.add("out/tmp-checkpoint-11/model.safetensors", st(t))
		// trainer.save_model() + save_state() at the end of a run.
		m.add("out/model.safetensors", st(t)).add("out/trainer_state.json", []byte("{}"))
		ck := mustFind(t, m, "out")
		if ck.Path != "out/checkpoint-10" || ck.Step != 10 || ck.Layout != LayoutHuggingFace {
			t.Errorf("got %+v", ck)
		}
	})
	t.Run("DeepSpeed inside a Trainer checkpoint is planned per rank", func(t *testing.T) {
		m := base(t, "out/checkpoint-2").add("out/checkpoint-2/latest", []byte("global_step2"))
		dsTag(t, m, "out/checkpoint-2/global_step2", 1, 2, "bf16_")
		m.add("out/checkpoint-2/rng_state_0.pth", torchZip(t, "r0")).add("out/checkpoint-2/rng_state_1.pth", torchZip(t, "r1"))
		ck := mustFind(t, m, "out")
		got := planNames(t, m, ck, PlanOptions{Rank: 1, WorldSize: 2})
		want := []string{"global_step2/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", "global_step2/mp_rank_00_model_states.pt",
			"latest", "model.safetensors", "optimizer.pt", "rng_state_1.pth", "trainer_state.json"}
		if !slices.Equal(got, want) {
			t.Errorf("rank 1: %v\nwant %v", got, want)
		}
	})
	t.Run("a Trainer checkpoint with DeepSpeed, named directly", func(t *testing.T) {
		m := base(t, "out/checkpoint-2").add("out/checkpoint-2/latest", []byte("global_step2"))
		dsTag(t, m, "out/checkpoint-2/global_step2", 1, 1, "")
		ck := mustFind(t, m, "out/checkpoint-2")
		if ck.Path != "out/checkpoint-2" || ck.Layout != LayoutHuggingFace || len(ck.Files) != 6 || ck.Size() != Total(mustPlan(t, m, ck)) {
			t.Errorf("got %+v", ck)
		}
	})
	t.Run("model directory without Trainer files", func(t *testing.T) {
		m := newMemTree().add("export/model.safetensors", st(t)).add("export/config.json", []byte(`{}`))
		ck := mustFind(t, m, "export")
		if ck.Path != "export" || len(ck.Files) != 2 {
			t.Errorf("got %+v", ck)
		}
	})
}

func TestLightningRules(t *testing.T) {
	t.Run("last by modification time, then version", func(t *testing.T) {
		m := newMemTree().
			add("c/last.ckpt", torchZip(t, "a")).
			add("c/last-v1.ckpt", torchZip(t, "b")).
			add("c/last-v2.ckpt", torchZip(t, "c")).
			add("c/epoch=9-step=9000.ckpt", torchZip(t, "d"))
		now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		m.mtime["c/last.ckpt"] = now.Add(time.Minute)
		m.mtime["c/last-v1.ckpt"] = now
		m.mtime["c/last-v2.ckpt"] = now
		if ck := mustFind(t, m, "c"); ck.Path != "c/last.ckpt" {
			t.Errorf("newest mtime: got %s", ck.Path)
		}
		m.mtime["c/last.ckpt"] = now
		if ck := mustFind(t, m, "c"); ck.Path != "c/last-v2.ckpt" {
			t.Errorf("same mtime: got %s", ck.Path)
		}
	})
	t.Run("steps compare as numbers", func(t *testing.T) {
		m := newMemTree().
			add("c/epoch=0-step=99.ckpt", torchZip(t, "a")).
			add("c/epoch=0-step=100.ckpt", torchZip(t, "b")).
			add("c/custom.ckpt", torchZip(t, "c")).
			add("c/empty-step=200.ckpt", nil)
		ck := mustFind(t, m, "c")
		if ck.Path != "c/epoch=0-step=100.ckpt" || ck.Step != 100 {
			t.Errorf("got %s step %d", ck.Path, ck.Step)
		}
	})
	t.Run("sharded DeepSpeed directory", func(t *testing.T) {
		m := newMemTree().add("c/last.ckpt/latest", []byte("checkpoint")).add("c/last.ckpt/zero_to_fp32.py", []byte("#"))
		dsTag(t, m, "c/last.ckpt/checkpoint", 1, 2, "bf16_")
		ck := mustFind(t, m, "c")
		if ck.Path != "c/last.ckpt" || ck.Content != LayoutDeepSpeed || len(ck.Files) != 5 {
			t.Errorf("got %+v", ck)
		}
		got := planNames(t, m, ck, PlanOptions{Rank: 0, WorldSize: 2})
		want := []string{"checkpoint/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "checkpoint/mp_rank_00_model_states.pt", "latest", "zero_to_fp32.py"}
		if !slices.Equal(got, want) {
			t.Errorf("rank 0: %v\nwant %v", got, want)
		}
	})
	t.Run("zip comment and legacy format", func(t *testing.T) {
		z := torchZip(t, "a")
		// Give the archive a comment, as a generic zip writer may.
		z[len(z)-2], z[len(z)-1] = 3, 0
		z = append(z, "abc"...)
		m := newMemTree().add("c/a-step=1.ckpt", z).add("c/b-step=2.ckpt", []byte("\x80\x02legacy pickle"))
		for _, want := range []string{"c/b-step=2.ckpt", "c/a-step=1.ckpt"} {
			if ck := mustFind(t, m, "c"); ck.Path != want {
				t.Errorf("got %s, want %s", ck.Path, want)
			}
			delete(m.files, want)
		}
	})
}

func TestRayRules(t *testing.T) {
	t.Run("missing file compared with the previous checkpoint", func(t *testing.T) {
		m := newMemTree()
		for i := 0; i < 3; i++ {
			d := fmt.Sprintf("trial/checkpoint_%06d", i)
			m.add(d+"/weights.npy", []byte("w")).add(d+"/extra/state.json", []byte("{}")).add(d+"/.metadata.json", []byte("{}"))
		}
		delete(m.files, "trial/checkpoint_000002/extra/state.json")
		cands, err := Candidates(context.Background(), m, "trial")
		if err != nil {
			t.Fatal(err)
		}
		if len(cands) != 3 || !errors.Is(cands[0].Err, ErrIncomplete) || !strings.Contains(cands[0].Err.Error(), "lacks extra/state.json") || cands[1].Err != nil {
			t.Fatalf("candidates: %+v", cands)
		}
		if cands[1].Checkpoint.Content != LayoutFiles {
			t.Errorf("content %s", cands[1].Checkpoint.Content)
		}
	})
	t.Run("empty checkpoint directory", func(t *testing.T) {
		m := newMemTree().add("trial/checkpoint_000001/.metadata.json", []byte("{}")).add("trial/checkpoint_000000/a.pt", torchZip(t, "a"))
		if ck := mustFind(t, m, "trial"); ck.Path != "trial/checkpoint_000000" {
			t.Errorf("got %s", ck.Path)
		}
	})
	t.Run("v2 snapshot with a custom name", func(t *testing.T) {
		m := newMemTree().
			add("run/checkpoint_2025-01-01_00-00-00.000001/a.pt", torchZip(t, "a")).
			add("run/epoch-7/a.pt", torchZip(t, "b")).
			add("run/checkpoint_manager_snapshot.json", []byte(`{"version":0,"checkpoint_results":[{"checkpoint_dir_name":"checkpoint_2025-01-01_00-00-00.000001"},{"checkpoint_dir_name":"epoch-7"}],"latest_checkpoint_result":{"checkpoint_dir_name":"epoch-7"}}`))
		if ck := mustFind(t, m, "run"); ck.Path != "run/epoch-7" || ck.Layout != LayoutRay {
			t.Errorf("got %+v", ck)
		}
	})
	t.Run("v2 torn snapshot falls back to names", func(t *testing.T) {
		m := newMemTree().
			add("run/checkpoint_2025-01-01_00-00-00.000001/a.pt", torchZip(t, "a")).
			add("run/checkpoint_2025-01-02_00-00-00.000001/a.pt", torchZip(t, "b")).
			add("run/checkpoint_manager_snapshot.json", []byte(`{"version":0,"checkpoint_res`))
		if ck := mustFind(t, m, "run"); ck.Path != "run/checkpoint_2025-01-02_00-00-00.000001" {
			t.Errorf("got %s", ck.Path)
		}
	})
	t.Run("v2 snapshot latest missing", func(t *testing.T) {
		m := newMemTree().
			add("run/checkpoint_2025-01-01_00-00-00.000001/a.pt", torchZip(t, "a")).
			add("run/checkpoint_manager_snapshot.json", []byte(`{"checkpoint_results":[{"checkpoint_dir_name":"checkpoint_2025-01-01_00-00-00.000001"}],"latest_checkpoint_result":{"checkpoint_dir_name":"gone"}}`))
		if ck := mustFind(t, m, "run"); ck.Path != "run/checkpoint_2025-01-01_00-00-00.000001" {
			t.Errorf("got %s", ck.Path)
		}
	})
	t.Run("per-rank files", func(t *testing.T) {
		m := newMemTree()
		for r := 0; r < 4; r++ {
			m.add(fmt.Sprintf("trial/checkpoint_000000/model-rank=%d.pt", r), torchZip(t, "m"))
			m.add(fmt.Sprintf("trial/checkpoint_000000/rank_%d/optim.pt", r), torchZip(t, "o"))
		}
		m.add("trial/checkpoint_000000/config.json", []byte("{}"))
		ck := mustFind(t, m, "trial")
		got := planNames(t, m, ck, PlanOptions{Rank: 2, WorldSize: 4})
		// rank_N/ directories are not a file-name family: kept whole.
		want := []string{"config.json", "model-rank=2.pt", "rank_0/optim.pt", "rank_1/optim.pt", "rank_2/optim.pt", "rank_3/optim.pt"}
		if !slices.Equal(got, want) {
			t.Errorf("rank 2: %v\nwant %v", got, want)
		}
		if got := planNames(t, m, ck, PlanOptions{Rank: 2, WorldSize: 3}); len(got) != 9 {
			t.Errorf("world 3 (no match): %v", got)
		}
	})
}

func TestDCPRules(t *testing.T) {
	meta, err := os.ReadFile(filepath.Join(fixtureDir, "dcp/step-20/.metadata"))
	if err != nil {
		t.Fatal(err)
	}
	distcp := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(fixtureDir, "dcp/step-20", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	m := newMemTree()
	for _, d := range []string{"ckpt/step_5", "ckpt/step_40"} {
		m.add(d+"/.metadata", meta).add(d+"/__0_0.distcp", distcp("__0_0.distcp")).add(d+"/__1_0.distcp", distcp("__1_0.distcp"))
	}
	m.add("ckpt/step_40/meta.pt", torchZip(t, "lightning fsdp meta"))
	m.add("ckpt/notes/readme.txt", []byte("not a checkpoint"))
	ck := mustFind(t, m, "ckpt")
	if ck.Path != "ckpt/step_40" || ck.Step != 40 || ck.Layout != LayoutDCP {
		t.Fatalf("got %+v", ck)
	}
	// A restore at another world size needs every item.
	all, err := Plan(context.Background(), m, ck, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w4, err := Plan(context.Background(), m, ck, PlanOptions{Rank: 1, WorldSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(all, w4) {
		t.Errorf("world 4 plan differs from the whole plan:\n%s\nvs\n%s", fmtRanges(w4), fmtRanges(all))
	}
	// meta.pt is not DCP's: planned whole.
	if !slices.Contains(planNames(t, m, ck, PlanOptions{Rank: 0, WorldSize: 2}), "meta.pt") {
		t.Error("meta.pt missing from plan")
	}
	// Items and priorities of rank 0: .metadata first, then model items,
	// then optimizer items.
	r0, err := Plan(context.Background(), m, ck, PlanOptions{Rank: 0, WorldSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r0[0].Name != "ckpt/step_40/.metadata" || r0[0].Priority != PriorityMetadata {
		t.Errorf("first range %+v", r0[0])
	}
}

func TestFindLatestErrors(t *testing.T) {
	ctx := context.Background()
	m := newMemTree().add("misc/notes.txt", []byte("x"))
	for _, c := range []struct {
		dir  string
		want []error
	}{
		{"missing", []error{ErrNoCheckpoint, fs.ErrNotExist}},
		{"misc", []error{ErrNoCheckpoint}},
	} {
		_, err := FindLatest(ctx, m, c.dir)
		for _, w := range c.want {
			if !errors.Is(err, w) {
				t.Errorf("FindLatest(%s) = %v, want %v", c.dir, err, w)
			}
		}
	}
	if _, err := FindLatest(ctx, m, "../up"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("escaping dir: %v", err)
	}
	// An I/O failure is reported as such, not as "no checkpoint": falling
	// back to an older checkpoint would prefetch the wrong one.
	boom := errors.New("boom")
	ft := &failingTree{Tree: newMemTree().add("out/checkpoint-1/trainer_state.json", []byte("{}")).add("out/checkpoint-1/model.safetensors", safetensorsFile(t, "w", "U8", []int64{1})), err: boom}
	if _, err := FindLatest(ctx, ft, "out"); !errors.Is(err, boom) || errors.Is(err, ErrNoCheckpoint) {
		t.Errorf("I/O error: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	dt, err := OpenDir(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	defer dt.Close()
	if _, err := FindLatest(cctx, dt, "hf"); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}

// failingTree fails every ReadAt.
type failingTree struct {
	Tree
	err error
}

func (f *failingTree) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	return 0, f.err
}
