package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

var versionOutputs = []string{"text", "json"}

// VersionOptions configures `blobfs version`.
type VersionOptions struct {
	Output string // text|json
}

// Validate checks the options.
func (o VersionOptions) Validate() error {
	if !oneOf(o.Output, versionOutputs) {
		return fmt.Errorf("--output %q: must be one of %s", o.Output, strings.Join(versionOutputs, "|"))
	}
	return nil
}

func newVersionCmd(d *Deps) *cobra.Command {
	o := VersionOptions{Output: "text"}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print blobfs's version, commit, build date, Go version and platform",
		Long: `Print which blobfs this is: release version, git commit (marked
"modified" when built from a tree with uncommitted changes), build date, Go
version and GOOS/GOARCH.

Include it in bug reports. --output json is for scripts and inventory tools.`,
		Example: `  blobfs version
  blobfs version --output json | jq -r .commit`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return usageError(err)
			}
			return runVersion(cmd.Context(), d, o)
		},
	}
	cmd.Flags().VarP(newEnum(&o.Output, "format", versionOutputs...), "output", "o", "output format: "+strings.Join(versionOutputs, "|"))
	return cmd
}

func runVersion(_ context.Context, d *Deps, o VersionOptions) error {
	info := d.Build()
	if o.Output == "json" {
		enc := json.NewEncoder(d.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	commit := info.Commit
	if info.Modified {
		commit += " (modified)"
	}
	_, err := fmt.Fprintf(d.Stdout, "blobfs %s\n  commit:   %s\n  built:    %s\n  go:       %s\n  platform: %s\n",
		info.Version, commit, info.Date, info.GoVersion, info.Platform())
	return err
}
