package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// PrefetchOptions configures `blobfs prefetch`.
type PrefetchOptions struct {
	Paths        []string // files, directories or globs inside a mount
	Parallel     int      // concurrent range fetches
	Manifest     string   // file with one path per line, in epoch order
	Check        bool     // report percent cached; fetch nothing
	Pin          bool     // keep fetched data from eviction until unpinned
	MaxBandwidth uint64   // bytes per second; 0: unlimited
	Checkpoint   string   // directory holding framework checkpoints
	Rank         int      // with Checkpoint: fetch what this rank reads
	WorldSize    int      // with Checkpoint: number of ranks
}

// DefaultPrefetchOptions returns the defaults the flags start from.
func DefaultPrefetchOptions() PrefetchOptions {
	return PrefetchOptions{Parallel: 16, WorldSize: 1}
}

// Validate checks the options.
func (o PrefetchOptions) Validate() error {
	var errs []error
	if len(o.Paths) == 0 && o.Manifest == "" && o.Checkpoint == "" {
		errs = append(errs, errors.New("nothing to prefetch: give PATH..., --manifest FILE or --checkpoint DIR"))
	}
	for _, p := range o.Paths {
		if p == "" {
			errs = append(errs, errors.New("empty PATH"))
			break
		}
	}
	if o.Parallel < 1 || o.Parallel > 1024 {
		errs = append(errs, fmt.Errorf("--parallel %d: must be between 1 and 1024", o.Parallel))
	}
	if o.Check && o.Pin {
		errs = append(errs, errors.New("--check only reports and fetches nothing, so it cannot --pin"))
	}
	if o.WorldSize < 1 {
		errs = append(errs, fmt.Errorf("--world-size %d: must be at least 1", o.WorldSize))
	} else if o.Rank < 0 || o.Rank >= o.WorldSize {
		errs = append(errs, fmt.Errorf("--rank %d: must be in [0, %d) for --world-size %d", o.Rank, o.WorldSize, o.WorldSize))
	}
	if (o.Rank != 0 || o.WorldSize != 1) && o.Checkpoint == "" {
		errs = append(errs, errors.New("--rank and --world-size apply only with --checkpoint"))
	}
	return errors.Join(errs...)
}

func newPrefetchCmd(d *Deps) *cobra.Command {
	o := DefaultPrefetchOptions()
	cmd := &cobra.Command{
		Use:   "prefetch [PATH...]",
		Short: "Warm the node cache with datasets or the newest checkpoint",
		Long: `Fill the node's block cache with data before anyone reads it, so GPUs do
not wait on the network when a job starts or restarts.

PATH... are files, directories or globs inside a running blobfs mount; the
mount fetches them through exactly the path a read miss takes. --manifest
gives the paths in the order an epoch will read them. --checkpoint DIR finds
the newest complete checkpoint under DIR from the frameworks' own markers
(DeepSpeed 'latest' + global_stepN/, Hugging Face checkpoint-N/ with
trainer_state.json, PyTorch DCP .metadata, Ray Train checkpoint_N/,
Lightning last.ckpt), skips a newer half-written one, and fetches it with
full parallelism; with --rank and --world-size, only what that rank reads.

For init containers and node jobs warming data before training, and for
anyone restarting a job. Shows a progress bar on a terminal and plain
periodic lines otherwise; Ctrl-C stops cleanly and keeps what was fetched.

Status: flags are parsed and validated; prefetching lands with issue #8.`,
		Example: `  # Warm the first shards of a dataset, 32 ranges at a time
  blobfs prefetch --parallel 32 '/mnt/data/imagenet/train-0000*'

  # How much of the dataset is cached already? (fetches nothing)
  blobfs prefetch --check /mnt/data/imagenet

  # Epoch order from a manifest, capped so many nodes do not saturate the account
  blobfs prefetch --manifest epoch0.txt --max-bandwidth 400MB/s

  # Restore: newest complete checkpoint, only what rank 3 of 8 reads, kept pinned
  blobfs prefetch --checkpoint /mnt/ckpt/run-42 --rank 3 --world-size 8 --pin`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Paths = args
			if err := o.Validate(); err != nil {
				return usageError(err)
			}
			return runPrefetch(cmd.Context(), d, o)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.IntVarP(&o.Parallel, "parallel", "p", o.Parallel, "number of byte ranges fetched at once")
	f.StringVar(&o.Manifest, "manifest", o.Manifest, "read paths from `FILE`, one per line, in the order they will be read")
	f.BoolVar(&o.Check, "check", o.Check, "report the percentage already cached per path; fetch nothing")
	f.BoolVar(&o.Pin, "pin", o.Pin, "pin fetched data so cache eviction leaves it alone until unpinned")
	f.Var(rateValue{&o.MaxBandwidth}, "max-bandwidth", "cap on download rate, e.g. 400MB/s or 1GiB/s; 0: unlimited")
	f.StringVar(&o.Checkpoint, "checkpoint", o.Checkpoint, "fetch the newest complete checkpoint under `DIR`")
	f.IntVar(&o.Rank, "rank", o.Rank, "with --checkpoint: fetch only what this rank reads")
	f.IntVar(&o.WorldSize, "world-size", o.WorldSize, "with --checkpoint: number of ranks the checkpoint is read by")
	return cmd
}

// runPrefetch prefetches. It is the seam issue #8 fills.
func runPrefetch(ctx context.Context, d *Deps, o PrefetchOptions) error {
	d.Logger.DebugContext(ctx, "prefetch options valid",
		"paths", len(o.Paths), "manifest", o.Manifest, "checkpoint", o.Checkpoint, "parallel", o.Parallel)
	return notImplemented("prefetch", issuePrefetch)
}
