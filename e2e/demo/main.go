// Command demo shows blobfs's storage layer end to end on a local Azure
// Blob emulator: it installs and starts Azurite, seeds a small training
// dataset and a checkpoint into container "demo" through blob.Store, lists
// it like `tree`, reads everything back with verified ranged reads and
// prints what it did and how fast.
//
//	go run ./e2e/demo            # run and stop Azurite again
//	go run ./e2e/demo -keep      # leave Azurite running for further play
//
// seed, showTree and verify are separate so the mount demo can seed the
// same data and then show it through a FUSE mount instead of the Store.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/azurite"
)

// demoContainer is the container the demo seeds.
const demoContainer = "demo"

type options struct {
	keep    bool
	dataset datasetSpec
}

func main() {
	var o options
	flag.BoolVar(&o.keep, "keep", false, "leave Azurite running after the demo and print how to reach it")
	flag.IntVar(&o.dataset.TrainShards, "shards", 12, "number of training shards")
	shardMiB := flag.Int("shard-mib", 3, "size of each shard in MiB")
	flag.Parse()
	o.dataset.ShardSize = *shardMiB << 20
	o.dataset.TestShards = max(1, o.dataset.TrainShards/4)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))

	// Ctrl-C cancels ctx; run then returns and stops Azurite.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, o); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "demo: interrupted; Azurite stopped")
		} else {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, o options) (err error) {
	fmt.Fprintf(w, "Starting Azurite %s (npm installs it into .tools on the first run)...\n", azurite.Version)
	t0 := time.Now()
	srv, err := azurite.Start(ctx, azurite.Options{Detached: o.keep})
	if err != nil {
		return err
	}
	defer func() {
		if !o.keep || err != nil {
			srv.Close()
		}
	}()
	fmt.Fprintf(w, "Azurite is up at %s (%.1fs)\n\n", srv.BlobEndpoint(), time.Since(t0).Seconds())

	if err := srv.CreateContainer(ctx, demoContainer); err != nil {
		return err
	}
	store, err := azstore.New(azstore.Config{
		ServiceURL: srv.BlobEndpoint(),
		Container:  demoContainer,
		Credential: azstore.SharedKey(srv.Account(), srv.Key()),
		Transport:  &http.Client{Transport: srv.Transport()},
	})
	if err != nil {
		return err
	}

	files := sampleDataset(o.dataset)
	seeded, err := seed(ctx, store, files)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	fmt.Fprintf(w, "Seeded %d blobs, %s, in %.2fs (%s/s; Put, or staged blocks + commit, every transfer checksummed)\n\n",
		seeded.Files, humanize.IBytes(uint64(seeded.Bytes)), seeded.Elapsed.Seconds(), rate(seeded.Bytes, seeded.Elapsed))

	listed, err := showTree(ctx, store, w, demoContainer+"/")
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	fmt.Fprintln(w)
	if err := showSafetensors(ctx, store, w, "checkpoints/checkpoint-100/model.safetensors"); err != nil {
		return err
	}
	fmt.Fprintln(w)

	read, err := verify(ctx, store, files)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintf(w, "Read back %d files, %s, in %.2fs (%s/s): every byte matches, every range MD5 verified, whole-file MD5s match\n",
		read.Files, humanize.IBytes(uint64(read.Bytes)), read.Elapsed.Seconds(), rate(read.Bytes, read.Elapsed))
	fmt.Fprintf(w, "Listed %d files through delimiter listings.\n", listed)

	if o.keep {
		fmt.Fprintf(w, "\nAzurite keeps running (in memory, pid %d):\n", srv.PID())
		fmt.Fprintf(w, "  endpoint   %s\n", srv.BlobEndpoint())
		fmt.Fprintf(w, "  account    %s (the well-known Azurite development key)\n", srv.Account())
		fmt.Fprintf(w, "  container  %s\n", demoContainer)
		fmt.Fprintf(w, "  log        %s\n", srv.LogPath())
		fmt.Fprintf(w, "  stop it    kill -- -%d\n", srv.PID())
		return nil
	}
	if err := srv.Close(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Azurite stopped.")
	return nil
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "∞ B"
	}
	return humanize.IBytes(uint64(float64(n) / d.Seconds()))
}
