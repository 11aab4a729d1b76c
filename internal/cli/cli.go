// Package cli is the blobfs command line: a cobra command tree whose
// commands parse flags into plain options structs, validate them, and hand
// them to a run function.
//
// Each command is built by newXCmd(*Deps) and runs runX(ctx, *Deps, XOptions).
// Options structs have defaults and Validate() and no cobra in them, so the
// implementations that later issues bring (mount, prefetch, csi, bootstrap)
// replace only the run function.
//
// Exit codes: 0 success, 1 runtime error, 2 usage error (bad flag, bad
// argument, invalid option value). An error may carry its own code by
// implementing ExitCode() int.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blobfs/blobfs/internal/buildinfo"
)

// Exit codes returned by Execute.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Deps is what commands take from the outside world. Tests replace every
// field; Main fills it from the process.
type Deps struct {
	Stdout io.Writer
	Stderr io.Writer
	// LookupEnv reads the environment (credentials and the Azure tooling
	// variables named in the mount help).
	LookupEnv func(string) (string, bool)
	// Build reports the binary's build information.
	Build func() buildinfo.Info
	// Args is the command line without the program name; `mount`
	// re-executes itself with it to run as a daemon.
	Args []string

	// Logger is built by the root command from --log-level and --log-format
	// before any command's RunE runs; it writes to Stderr.
	Logger *slog.Logger
}

// env returns the value of an environment variable, or "".
func (d *Deps) env(name string) string {
	if d.LookupEnv == nil {
		return ""
	}
	v, _ := d.LookupEnv(name)
	return v
}

// Main runs blobfs with args (without the program name) and returns the
// process exit code. It is what cmd/blobfs calls, and what tests call
// in-process.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := &Deps{
		Stdout:    stdout,
		Stderr:    stderr,
		LookupEnv: os.LookupEnv,
		Build:     buildinfo.Get,
		Args:      args,
	}
	return Execute(ctx, NewRootCmd(d), args, stderr)
}

// Execute runs root with args, prints any error as "COMMAND PATH: error" on
// stderr, and returns the exit code.
func Execute(ctx context.Context, root *cobra.Command, args []string, stderr io.Writer) int {
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	path := root.CommandPath()
	if cmd != nil {
		path = cmd.CommandPath()
	}
	// One line per problem (errors.Join separates them with newlines), each
	// prefixed with the command, so every line stands alone in a log.
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(stderr, "%s: %s\n", path, line)
	}
	if IsUsage(err) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", path)
	}
	return ExitCode(err)
}

// ExitCode maps an error to a process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return ExitError
}

// UsageError is a bad command line: unknown command or flag, wrong number
// of arguments, or an option value that fails validation. Exit code 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// ExitCode implements the exit-code convention: 2.
func (e *UsageError) ExitCode() int { return ExitUsage }

// IsUsage reports whether err is a usage error.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

func usageError(err error) error {
	if err == nil || IsUsage(err) {
		return err
	}
	return &UsageError{Err: err}
}

func usageErrorf(format string, a ...any) error {
	return &UsageError{Err: fmt.Errorf(format, a...)}
}

// NotImplementedError is returned by commands whose flags are in place but
// whose work lands with a later issue. It is a runtime error (exit 1):
// blobfs never pretends to have done what it has not.
type NotImplementedError struct {
	Command string // e.g. "mount"
	Issue   int    // tracking issue number
}

func (e *NotImplementedError) Error() string {
	return fmt.Sprintf("not implemented yet (tracked in issue #%d)", e.Issue)
}

func notImplemented(command string, issue int) error {
	return &NotImplementedError{Command: command, Issue: issue}
}

// Issue numbers tracking the commands that are not implemented yet.
const (
	issueMount     = 3
	issueCSI       = 7
	issuePrefetch  = 8
	issueBootstrap = 9
)

// exactArgs is cobra.ExactArgs with a usage error and a named argument.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("expected %s (%d argument%s), got %d", names, n, plural(n), len(args))
		}
		return nil
	}
}

// noArgs rejects positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unexpected argument %q", args[0])
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
