package prefetch

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Hugging Face Trainer (transformers.Trainer._save_checkpoint).
//
// Trainer writes checkpoint-{global_step}/ under output_dir: the model
// (model.safetensors, or model-0000i-of-0000n.safetensors shards plus
// model.safetensors.index.json, or pytorch_model.bin[.index.json], or a
// PEFT adapter_model.*), then optimizer.pt, scheduler.pt, scaler.pt,
// rng_state.pth / rng_state_{process}.pth, and last trainer_state.json.
// With DeepSpeed the optimizer lives in a nested global_step{N}/ with its
// own `latest`; with FSDP SHARDED_STATE_DICT in nested DCP directories
// (pytorch_model_fsdp_0/, optimizer_0/).
//
// Complete means: trainer_state.json exists and parses as a JSON object
// (it is written last); some model weights exist; every shard the index
// names exists; every safetensors file has a valid header and exactly the
// size it declares; every torch.save file ends with its zip end record; and
// nested DCP or DeepSpeed directories are complete by their own rules.
// Newest means the largest N, as transformers' get_last_checkpoint
// decides. tmp-checkpoint-N staging directories never match.
//
// A directory with model files but no trainer_state.json (save_pretrained
// output, e.g. inside a Ray Train checkpoint) is accepted as a model
// directory, unless Trainer's other files (optimizer.pt, scheduler.pt,
// rng_state*.pth, training_args.bin) show it to be a Trainer checkpoint
// that stopped before trainer_state.json.

var (
	hfCheckpointRE = regexp.MustCompile(`^checkpoint-(\d+)$`)
	hfShardRE      = regexp.MustCompile(`^(?:model|pytorch_model)-\d+-of-\d+\.(?:safetensors|bin)$`)
	hfRNGRE        = regexp.MustCompile(`^rng_state(?:_\d+)?\.pth$`)
)

const (
	hfTrainerState = "trainer_state.json"
	// maxTrainerState bounds trainer_state.json; log_history makes it grow
	// with the run, but not past a few MB.
	maxTrainerState = 256 << 20
	maxIndexJSON    = 64 << 20
)

var hfWeightFiles = []string{
	"model.safetensors", "model.safetensors.index.json",
	"pytorch_model.bin", "pytorch_model.bin.index.json",
	"adapter_model.safetensors", "adapter_model.bin",
}

var hfTrainerFiles = []string{"optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "rng_state.pth"}

func (d dirEntries) isHFModel() bool {
	return d.hasFile(hfTrainerState) || d.hasFile(hfWeightFiles...) || d.hasFileMatching(hfShardRE)
}

func hfCandidates(t Tree, dir string, d dirEntries) []candidate {
	var out []candidate
	for name := range d.dirs {
		if hfCheckpointRE.MatchString(name) {
			p := join(dir, name)
			out = append(out, candidate{layout: LayoutHuggingFace, path: p, step: stepOf(name), check: func(ctx context.Context) ([]Entry, Layout, error) {
				files, err := checkHF(ctx, t, p, true)
				return files, LayoutHuggingFace, err
			}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].step > out[j].step })
	return out
}

func hfModelCandidate(t Tree, dir string, step int64) candidate {
	return candidate{layout: LayoutHuggingFace, path: dir, step: step, check: func(ctx context.Context) ([]Entry, Layout, error) {
		files, err := checkHF(ctx, t, dir, false)
		return files, LayoutHuggingFace, err
	}}
}

// checkHF checks the checkpoint or model directory dir. trainer says it is
// a Trainer checkpoint-N, for which trainer_state.json is required.
func checkHF(ctx context.Context, t Tree, dir string, trainer bool) ([]Entry, error) {
	files, err := walk(ctx, t, dir)
	if err != nil {
		return nil, err
	}
	top := dirIndex(baseNames(under(files, dir)))
	if top.hasFile(hfTrainerFiles...) || top.hasFileMatching(hfRNGRE) {
		trainer = true
	}
	if st, ok := top.files[hfTrainerState]; ok {
		data, err := readSmall(ctx, t, join(dir, hfTrainerState), st.Size, maxTrainerState)
		if err != nil {
			return files, err
		}
		var obj map[string]any
		if err := json.Unmarshal(data, &obj); err != nil {
			return files, fmt.Errorf("%s is not a JSON object (torn write?): %v: %w", hfTrainerState, err, ErrIncomplete)
		}
	} else if trainer {
		return files, fmt.Errorf("no %s (Trainer writes it last): %w", hfTrainerState, ErrIncomplete)
	}
	hasWeights := top.hasFile(hfWeightFiles...) || top.hasFileMatching(hfShardRE) ||
		len(dcpDirs(files)) > 0 || len(deepspeedDirs(files)) > 0
	if !hasWeights {
		return files, fmt.Errorf("no model weights: %w", ErrIncomplete)
	}
	for _, index := range []string{"model.safetensors.index.json", "pytorch_model.bin.index.json", "adapter_model.safetensors.index.json"} {
		f, ok := top.files[index]
		if !ok {
			continue
		}
		shards, err := readIndexShards(ctx, t, join(dir, index), f.Size)
		if err != nil {
			return files, err
		}
		for _, s := range shards {
			if _, ok := top.files[s]; !ok {
				return files, fmt.Errorf("%s names shard %s, which is missing: %w", index, s, ErrIncomplete)
			}
		}
	}
	return files, checkFiles(ctx, t, files)
}

// readIndexShards returns the distinct files of an index's weight_map.
func readIndexShards(ctx context.Context, t Tree, name string, size int64) ([]string, error) {
	data, err := readSmall(ctx, t, name, size, maxIndexJSON)
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", name, err, ErrMalformed)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty weight_map: %w", name, ErrMalformed)
	}
	set := map[string]bool{}
	for _, f := range idx.WeightMap {
		if f == "" || strings.Contains(f, "/") || f == "." || f == ".." {
			return nil, fmt.Errorf("%s: shard name %q is not a file beside the index: %w", name, f, ErrMalformed)
		}
		set[f] = true
	}
	return sortedKeys(set), nil
}

// baseNames returns entries renamed to their base names.
func baseNames(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		e.Name = path.Base(e.Name)
		out[i] = e
	}
	return out
}
