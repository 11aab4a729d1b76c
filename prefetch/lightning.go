package prefetch

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// PyTorch Lightning (ModelCheckpoint).
//
// Checkpoints are *.ckpt files in the callback's dirpath, named by its
// filename template (default epoch={epoch}-step={step}.ckpt), plus
// last.ckpt with save_last (last-v{N}.ckpt when the name was taken).
// Strategies that shard (DeepSpeed, FSDP) write a *.ckpt directory holding
// a DeepSpeed or DCP checkpoint instead of a file.
//
// Complete means: a file is non-empty and, as a torch.save zip archive,
// ends with its end record (Lightning writes the archive in one go but not
// atomically); a directory is complete by its inner layout's rules.
//
// Which one: as Lightning's ckpt_path="last" does, the most recently
// modified complete last*.ckpt; without one, the highest step=N (then
// epoch=N); then other *.ckpt names by modification time.

var (
	plLastRE  = regexp.MustCompile(`^last(?:-v(\d+))?\.ckpt$`)
	plStepRE  = regexp.MustCompile(`(?:^|[-_])step=(\d+)`)
	plEpochRE = regexp.MustCompile(`(?:^|[-_])epoch=(\d+)`)
)

func (d dirEntries) isLightning() bool {
	for n := range d.files {
		if strings.HasSuffix(n, ".ckpt") {
			return true
		}
	}
	for n := range d.dirs {
		if strings.HasSuffix(n, ".ckpt") {
			return true
		}
	}
	return false
}

func lightningCandidates(t Tree, dir string, ents []Entry, depth int) []candidate {
	type pc struct {
		e           Entry
		class       int // 0 last, 1 step, 2 other
		version     int64
		step, epoch int64
	}
	var cs []pc
	for _, e := range ents {
		if !strings.HasSuffix(e.Name, ".ckpt") {
			continue
		}
		c := pc{e: e, class: 2, step: -1, epoch: -1}
		if m := plLastRE.FindStringSubmatch(e.Name); m != nil {
			c.class = 0
			if m[1] != "" {
				c.version, _ = strconv.ParseInt(m[1], 10, 64)
			}
		} else if m := plStepRE.FindStringSubmatch(e.Name); m != nil {
			c.class = 1
			c.step, _ = strconv.ParseInt(m[1], 10, 64)
			if m := plEpochRE.FindStringSubmatch(e.Name); m != nil {
				c.epoch, _ = strconv.ParseInt(m[1], 10, 64)
			}
		}
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.class != b.class {
			return a.class < b.class
		}
		switch a.class {
		case 0:
			if !a.e.ModTime.Equal(b.e.ModTime) {
				return a.e.ModTime.After(b.e.ModTime)
			}
			if a.version != b.version {
				return a.version > b.version
			}
		case 1:
			if a.step != b.step {
				return a.step > b.step
			}
			if a.epoch != b.epoch {
				return a.epoch > b.epoch
			}
		case 2:
			if !a.e.ModTime.Equal(b.e.ModTime) {
				return a.e.ModTime.After(b.e.ModTime)
			}
		}
		return a.e.Name > b.e.Name
	})
	out := make([]candidate, 0, len(cs))
	for _, c := range cs {
		p := join(dir, c.e.Name)
		e := c.e
		e.Name = p
		out = append(out, candidate{layout: LayoutLightning, path: p, step: c.step, check: func(ctx context.Context) ([]Entry, Layout, error) {
			if !e.IsDir {
				return []Entry{e}, LayoutLightning, checkTorchFile(ctx, t, e)
			}
			inner, err := findLatest(ctx, t, p, depth+1)
			if err != nil {
				return nil, LayoutLightning, fmt.Errorf("sharded checkpoint directory: %w: %w", ErrIncomplete, err)
			}
			// The whole directory is the checkpoint (DeepSpeed's `latest`
			// and zero_to_fp32.py, DCP's meta.pt), not just the inner tag.
			files, err := walk(ctx, t, p)
			return files, inner.Content, err
		}})
	}
	return out
}
