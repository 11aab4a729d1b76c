package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// GlobalOptions are the persistent flags every command takes.
type GlobalOptions struct {
	LogLevel  string // debug|info|warn|error
	LogFormat string // text|json
}

// DefaultGlobalOptions returns the defaults: info-level text logs.
func DefaultGlobalOptions() GlobalOptions {
	return GlobalOptions{LogLevel: "info", LogFormat: "text"}
}

// Validate checks the log level and format.
func (o GlobalOptions) Validate() error {
	if _, err := parseLevel(o.LogLevel); err != nil {
		return err
	}
	if !oneOf(o.LogFormat, logFormats) {
		return fmt.Errorf("--log-format %q: must be one of %s", o.LogFormat, strings.Join(logFormats, "|"))
	}
	return nil
}

// NewRootCmd builds the blobfs command tree. Commands write to d.Stdout and
// d.Stderr and read the environment through d.LookupEnv only.
func NewRootCmd(d *Deps) *cobra.Command {
	g := DefaultGlobalOptions()
	info := d.Build()
	root := &cobra.Command{
		Use:   "blobfs",
		Short: "A fast, safe FUSE filesystem over Azure Blob Storage for GPU training",
		Long: `blobfs mounts an Azure Blob Storage container as an ordinary directory, so
training code (Ray, PyTorch, Hugging Face) reads datasets and writes
checkpoints with plain file I/O.

It is built for GPU clusters on AKS: a node-level block cache on local NVMe
shared by every mount on the node, prefetching that understands dataset
scans and checkpoint layouts, checkpoint writes that stream to Blob and are
durable once fsync or close returns, Azure workload identity, and a CSI
driver for ReadWriteMany volumes. It reads BlobFuse2's config.yaml and
environment variables, so existing BlobFuse2 and blob-csi-driver set-ups
carry over.

See 'blobfs COMMAND --help' for each command.

Credentials never go on the command line: blobfs reads them from the
environment (AZURE_STORAGE_ACCESS_KEY, AZURE_STORAGE_SAS_TOKEN, workload
identity variables) or from a config file, and never logs them.`,
		Example: `  # Mount a container (BlobFuse2-style environment)
  export AZURE_STORAGE_ACCOUNT=mydata AZURE_STORAGE_AUTH_TYPE=workloadidentity
  blobfs mount /mnt/data --container datasets

  # Warm the newest checkpoint before training resumes
  blobfs prefetch --checkpoint /mnt/checkpoints/run-42

  # Show what this binary is
  blobfs version`,
		Version:       info.Version,
		SilenceErrors: true, // Execute prints errors once, with the command path
		SilenceUsage:  true, // a usage error points at --help instead of dumping it
		// Unknown subcommands and stray arguments are usage errors (exit 2).
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return usageErrorf("%s", msg)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := g.Validate(); err != nil {
				return usageError(err)
			}
			logger, err := newLogger(d.Stderr, g.LogLevel, g.LogFormat)
			if err != nil {
				return usageError(err)
			}
			d.Logger = logger
			return nil
		},
	}
	root.SuggestionsMinimumDistance = 2
	root.SetOut(d.Stdout)
	root.SetErr(d.Stderr)
	root.SetVersionTemplate("blobfs {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })

	pf := root.PersistentFlags()
	pf.Var(newEnum(&g.LogLevel, "level", logLevels...), "log-level",
		"log verbosity: "+strings.Join(logLevels, "|"))
	pf.Var(newEnum(&g.LogFormat, "format", logFormats...), "log-format",
		"log format on stderr: text (people, journald) or json (log collectors)")

	root.AddCommand(
		newMountCmd(d),
		newUnmountCmd(d),
		newPrefetchCmd(d),
		newCSICmd(d),
		newBootstrapCmd(d),
		newVersionCmd(d),
	)
	return root
}
