// Command blobfs is a FUSE filesystem over Azure Blob Storage for GPU
// training. See internal/cli for the commands and `blobfs --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/blobfs/blobfs/internal/cli"
)

func main() {
	os.Exit(run())
}

// run executes the command line with a context cancelled on the first
// SIGINT or SIGTERM; a second signal gets the default behaviour (exit), so
// a stuck shutdown can still be interrupted.
func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	return cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
}
