package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/blobfs/blobfs/internal/config"
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
	Evict        bool     // drop the paths' cached blocks (pinned ones too)
	Unpin        bool     // make the paths' pinned blocks evictable again
	Socket       string   // the mount's control socket; empty: the control file inside the mount
	Priority     string   // low|normal|high among prefetches sharing the mount; empty: high for --checkpoint, else normal

	// Standalone (no mount): fill the node cache directory directly.
	// Set when --container or --config-file is given.
	Standalone bool
	ConfigFile string
	Config     config.Mount

	// ProgressEvery is how often progress is printed when stderr is not a
	// terminal (a terminal gets a live bar).
	ProgressEvery time.Duration
}

// DefaultPrefetchOptions returns the defaults the flags start from.
func DefaultPrefetchOptions() PrefetchOptions {
	return PrefetchOptions{Parallel: 16, WorldSize: 1, ProgressEvery: 5 * time.Second, Config: config.Default()}
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
	modes := 0
	for _, on := range []bool{o.Check, o.Evict, o.Unpin} {
		if on {
			modes++
		}
	}
	if modes > 1 || (o.Evict || o.Unpin) && o.Pin {
		errs = append(errs, errors.New("--check, --evict, --unpin and --pin exclude each other"))
	}
	if (o.Evict || o.Unpin) && o.Checkpoint != "" {
		errs = append(errs, errors.New("--evict and --unpin take paths, not --checkpoint"))
	}
	if o.Checkpoint != "" && (len(o.Paths) > 0 || o.Manifest != "") {
		errs = append(errs, errors.New("--checkpoint takes no other paths"))
	}
	if o.Standalone && o.Socket != "" {
		errs = append(errs, errors.New("--socket talks to a running mount; --container/--config-file fill the cache without one: not both"))
	}
	if o.ProgressEvery <= 0 {
		errs = append(errs, fmt.Errorf("--progress-interval %v: must be positive", o.ProgressEvery))
	}
	return errors.Join(errs...)
}

func newPrefetchCmd(d *Deps) *cobra.Command {
	o := DefaultPrefetchOptions()
	var checkSecrets func() error
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

How it reaches the mount: blobfs finds the mount holding PATH and talks to
its control file (` + "`.blobfs-control`" + ` at the mount's root, hidden from
listings), which works for any user who may use the mount, inside a pod
too, and on a read-only mount or volumeMount (the file is opened
read-only and the request sent by ioctl). --socket PATH talks to the mount's unix socket instead (root, node
tools; /run/blobfs/mount-HASH.sock by default, see the mount's log).

Standalone: with --container (or --config-file) and the same account,
endpoint and credential settings as 'blobfs mount', PATHs are paths inside
the container and the cache directory (--cache-dir) is filled directly,
before any mount exists, in the layout a mount of that container reuses.

--check reports per path the exact share cached and the cache's hit ratio;
--evict drops paths from the cache; --pin keeps them until --unpin.

Exit status: 0 done (with --check: everything cached); 1 error, or some
paths failed; 2 usage; 3 --check found something not fully cached; 4
nothing matched (or no complete checkpoint); 130 interrupted (what was
fetched stays cached and consistent).`,
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
			if err := checkSecrets(); err != nil {
				return err
			}
			o.Paths = args
			f := cmd.Flags()
			o.Standalone = f.Changed("container") || f.Changed("container-name") || o.ConfigFile != ""
			if o.Standalone {
				if f.Changed("endpoint") {
					if err := validateEndpoint(o.Config.Storage.Endpoint); err != nil {
						return usageError(err)
					}
				}
				if _, err := config.Load(&o.Config, f, config.LoadOptions{
					ConfigFile: o.ConfigFile, Getenv: d.LookupEnv, Logger: d.Logger,
				}); err != nil {
					if errors.Is(err, config.ErrInvalid) {
						return usageError(err)
					}
					return fmt.Errorf("reading settings: %w", err)
				}
			}
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
	f.BoolVar(&o.Evict, "evict", o.Evict, "drop the paths from the cache (pinned data too)")
	f.BoolVar(&o.Unpin, "unpin", o.Unpin, "make the paths' pinned data evictable again")
	f.Var(newEnum(&o.Priority, "priority", "low", "normal", "high"), "priority",
		"low|normal|high: which prefetch gets the mount's fetch slots first (default high for --checkpoint, else normal)")
	f.StringVar(&o.Socket, "socket", o.Socket, "talk to the mount through its control socket at `PATH` (node tools) instead of the control file")
	f.DurationVar(&o.ProgressEvery, "progress-interval", o.ProgressEvery, "how often to print progress when stderr is not a terminal")
	// Standalone: the storage and cache settings of 'blobfs mount'.
	f.StringVar(&o.ConfigFile, "config-file", "", "standalone: read storage settings from `FILE` (BlobFuse2 config.yaml or blobfs YAML)")
	config.BindFlags(f, &o.Config)
	for _, name := range mountOnlyFlags {
		_ = f.MarkHidden(name)
	}
	checkSecrets = addSecretTraps(f)
	return cmd
}

// mountOnlyFlags are 'blobfs mount' settings BindFlags defines that mean
// nothing to a prefetch: accepted (a shared config file or flag list
// works) but not shown.
var mountOnlyFlags = []string{"read-only", "allow-other", "uid", "gid", "umask", "attr-timeout", "entry-timeout",
	"negative-timeout", "list-timeout", "direct-io", "prefetch", "log-file", "metrics-addr", "foreground",
	"block-size-mb", "container-name"}
