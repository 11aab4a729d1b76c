package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blobfs/blobfs/internal/config"
	"github.com/blobfs/blobfs/internal/daemon"
	"github.com/blobfs/blobfs/internal/serve"
	"github.com/blobfs/blobfs/prefetch"
)

// MountOptions configures `blobfs mount`. Config holds the settings that
// config.Load resolved: defaults, then BlobFuse2's environment variables,
// then ConfigFile, then the flags the user set.
type MountOptions struct {
	Mountpoint string
	ConfigFile string // BlobFuse2 config.yaml or blobfs YAML; empty for none
	Config     config.Mount

	// ControlSocket is the control socket's path ("" default, "none").
	ControlSocket string
	// AutoPrefetch configures automatic prefetch (prefetch.AutoOptions).
	AutoPrefetch prefetch.AutoOptions
}

// Validate checks the options without touching the system.
func (o MountOptions) Validate() error {
	var errs []error
	if o.Mountpoint == "" {
		errs = append(errs, errors.New("empty MOUNTPOINT"))
	}
	if err := o.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if a := o.Config.Storage.Account; a != "" {
		if err := validateAccount(a); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Config.MetricsAddr != "" {
		if err := validateListenAddr("--metrics-addr", o.Config.MetricsAddr); err != nil {
			errs = append(errs, err)
		}
	}
	if f := o.AutoPrefetch.CheckpointFraction; f < 0 || f > 1 {
		errs = append(errs, fmt.Errorf("--auto-prefetch-checkpoint %v: want a fraction of the cache from 0 (off) to 1", f))
	}
	if o.AutoPrefetch.NextShards < 0 {
		errs = append(errs, fmt.Errorf("--auto-prefetch-shards %d: must not be negative", o.AutoPrefetch.NextShards))
	}
	return errors.Join(errs...)
}

func newMountCmd(d *Deps) *cobra.Command {
	var o MountOptions
	var checkSecrets func() error
	cmd := &cobra.Command{
		Use:   "mount MOUNTPOINT --container NAME",
		Short: "Mount a Blob container as a POSIX directory",
		Long: `Mount an Azure Blob Storage container at MOUNTPOINT through FUSE, so
training code reads datasets and writes checkpoints with ordinary file I/O.

For people who run Ray, PyTorch or Hugging Face jobs on VMs or AKS nodes, and
for BlobFuse2 users: BlobFuse2's environment variables and config.yaml are
understood (--container-name is an alias of --container), and settings
blobfs does not support are named in one warning.

blobfs returns once the mount is ready and keeps serving in the background;
--foreground keeps it attached (for systemd, containers and debugging).
'blobfs unmount MOUNTPOINT' or SIGTERM unmounts cleanly. Reads are served
through a block cache in --cache-dir shared by every mount on the node.

Settings come from, in increasing precedence: defaults, the environment,
--config-file, then flags.

Credentials never go on the command line (argv shows in ps and shell
history) and are never logged. blobfs reads them from --config-file or from
the environment BlobFuse2 and the Azure SDKs already use:
  AZURE_STORAGE_ACCOUNT            default for --account
  AZURE_STORAGE_ACCOUNT_CONTAINER  default for --container
  AZURE_STORAGE_BLOB_ENDPOINT      default for --endpoint
  AZURE_STORAGE_AUTH_TYPE          default for --auth-mode
  AZURE_STORAGE_ACCESS_KEY         shared key (key)
  AZURE_STORAGE_SAS_TOKEN          SAS token (sas)
  AZURE_CLIENT_ID                  identity's client ID (spn, msi, workloadidentity)
  AZURE_TENANT_ID                  Entra ID tenant (spn, workloadidentity)
  AZURE_FEDERATED_TOKEN_FILE       projected service-account token (workloadidentity)
Without --auth-mode, blobfs picks the mode from the credentials present.

Status: flags, environment and config file are read and validated;
mounting lands with issue #3.`,
		Example: `  # Workload identity on AKS (the pod's projected token)
  blobfs mount /mnt/data --account mydata --container datasets --auth-mode workloadidentity

  # Shared key from the environment, read-only, usable by Ray's uid 1000
  export AZURE_STORAGE_ACCOUNT=mydata AZURE_STORAGE_ACCESS_KEY=...   # never a flag
  blobfs mount /mnt/data --container datasets --read-only --allow-other --uid 1000 --gid 1000

  # An existing BlobFuse2 config.yaml, unchanged
  blobfs mount /mnt/data --config-file /etc/blobfuse2/config.yaml

  # Local Azurite, in the foreground, with Prometheus metrics
  blobfs mount /tmp/m --container test --endpoint http://127.0.0.1:10000/devstoreaccount1 \
      --foreground --metrics-addr 127.0.0.1:9090`,
		Args: exactArgs(1, "MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSecrets(); err != nil {
				return err
			}
			// A SAS pasted into --endpoint is already in argv: refuse it
			// without echoing it. (An endpoint from the environment or a
			// file is not in argv.)
			if cmd.Flags().Changed("endpoint") {
				if err := validateEndpoint(o.Config.Storage.Endpoint); err != nil {
					return usageError(err)
				}
			}
			o.Mountpoint = args[0]
			if _, err := config.Load(&o.Config, cmd.Flags(), config.LoadOptions{
				ConfigFile: o.ConfigFile,
				Getenv:     d.LookupEnv,
				Logger:     d.Logger,
			}); err != nil {
				if errors.Is(err, config.ErrInvalid) {
					return usageError(err)
				}
				return fmt.Errorf("reading settings: %w", err)
			}
			if err := o.Validate(); err != nil {
				return usageError(err)
			}
			return runMount(cmd.Context(), d, o)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.ConfigFile, "config-file", "",
		"read settings from `FILE`: a BlobFuse2 config.yaml (unchanged) or blobfs YAML; flags override it")
	config.BindFlags(f, &o.Config)
	o.AutoPrefetch = prefetch.DefaultAutoOptions()
	f.Float64Var(&o.AutoPrefetch.CheckpointFraction, "auto-prefetch-checkpoint", o.AutoPrefetch.CheckpointFraction,
		"reading a checkpoint marker (latest, .metadata, trainer_state.json) prefetches the rest of that checkpoint, up to this fraction of the cache; 0: off")
	f.IntVar(&o.AutoPrefetch.NextShards, "auto-prefetch-shards", o.AutoPrefetch.NextShards,
		"a file read in order to its end prefetches the next N files of its directory; 0: off")
	f.StringVar(&o.ControlSocket, "control-socket", "",
		"control socket for 'blobfs prefetch --socket' (default /run/blobfs/mount-HASH.sock as root, else under --cache-dir; 'none': no socket)")
	checkSecrets = addSecretTraps(f)
	return cmd
}

// runMount mounts the container. Without --foreground it re-executes
// itself as a daemon and returns when the daemon reports the mount ready
// (or fails with the daemon's error, leaving nothing mounted).
func runMount(ctx context.Context, d *Deps, o MountOptions) error {
	s := o.Config.Storage
	d.Logger.DebugContext(ctx, "mount options valid",
		"mountpoint", o.Mountpoint, "account", s.Account, "container", s.Container,
		"auth_mode", string(s.AuthMode), "config_file", o.ConfigFile, "read_only", o.Config.FS.ReadOnly)
	if !o.Config.Foreground && !daemon.IsDaemon() {
		// Fail on an unusable mountpoint before starting anything.
		if _, err := serve.CheckMountpoint(o.Mountpoint); err != nil {
			return err
		}
		logFile := o.Config.Log.File
		if logFile == "" {
			var err error
			if logFile, err = defaultLogFile(o.Mountpoint); err != nil {
				return err
			}
		}
		pid, err := daemon.Start(ctx, daemon.Options{Args: d.Args, LogFile: logFile})
		if err != nil {
			return err
		}
		fmt.Fprintf(d.Stdout, "blobfs: mounted %s at %s (daemon pid %d, log %s)\n",
			o.Config.Storage.Container, o.Mountpoint, pid, logFile)
		return nil
	}
	log, closeLog, err := mountLogger(d, o.Config)
	if err != nil {
		return err
	}
	defer closeLog()
	auto := o.AutoPrefetch
	return serve.Run(ctx, o.Mountpoint, o.Config, serve.Options{Logger: log, Ready: daemon.Ready,
		ControlSocket: o.ControlSocket, AutoPrefetch: &auto})
}

// mountLogger is the root logger, or one writing to --log-file in the
// foreground, at the config file's level when it names one (BlobFuse2's
// logging.level). A daemon's stderr already is its log file.
func mountLogger(d *Deps, cfg config.Mount) (*slog.Logger, func(), error) {
	if cfg.Log.Level == config.Default().Log.Level && (cfg.Log.File == "" || daemon.IsDaemon()) {
		return d.Logger, func() {}, nil
	}
	level, err := config.ParseLevel(cfg.Log.Level)
	if err != nil {
		return nil, nil, usageError(err)
	}
	var w io.Writer = d.Stderr
	closeLog := func() {}
	if cfg.Log.File != "" && !daemon.IsDaemon() {
		f, err := os.OpenFile(cfg.Log.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		w, closeLog = f, func() { f.Close() }
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), closeLog, nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), closeLog, nil
}

// defaultLogFile is where a daemon logs without --log-file:
// ~/.blobfs/mount-<mountpoint>.log, like BlobFuse2's ~/.blobfuse2/.
func defaultLogFile(mountpoint string) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	dir := filepath.Join(home, ".blobfs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("log directory: %w", err)
	}
	abs, _ := filepath.Abs(mountpoint)
	name := strings.Trim(strings.ReplaceAll(abs, "/", "-"), "-")
	if name == "" {
		name = "root"
	}
	return filepath.Join(dir, "mount-"+name+".log"), nil
}
