// Command demo shows blobfs end to end on a local Azure Blob emulator: it
// installs and starts Azurite, seeds a small training dataset and a
// checkpoint into container "demo" through blob.Store, lists it like
// `tree`, reads everything back with verified ranged reads and prints what
// it did and how fast. Then, where FUSE mounts are possible (root and
// /dev/fuse), it seeds a few hundred small files and one large file,
// mounts the container read-only with the real blobfs binary ($BLOBFS_BIN,
// which `make demo` sets, else one built with go build), lists it like
// ls, reads the large file cold and warm, checks every file's SHA-256 and
// unmounts. Elsewhere it says why it skips the mount part.
//
//	go run ./e2e/demo                # run and stop Azurite again
//	go run ./e2e/demo -large-mb 1024 # a larger file for the cold/warm reads
//	go run ./e2e/demo -keep          # leave Azurite running for further play
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
	mount   mountSpec
}

// newDemoStore opens the demo container through the azstore adapter.
func newDemoStore(srv *azurite.Server) (*azstore.Store, error) {
	return azstore.New(azstore.Config{
		ServiceURL: srv.BlobEndpoint(),
		Container:  demoContainer,
		Credential: azstore.SharedKey(srv.Account(), srv.Key()),
		Transport:  &http.Client{Transport: srv.Transport()},
	})
}

func main() {
	var o options
	flag.BoolVar(&o.keep, "keep", false, "leave Azurite running after the demo and print how to reach it")
	flag.IntVar(&o.dataset.TrainShards, "shards", 12, "number of training shards")
	shardMiB := flag.Int("shard-mib", 3, "size of each shard in MiB")
	flag.BoolVar(&o.mount.Enabled, "mount", true, "also mount the container with the real blobfs binary (needs root and /dev/fuse; $BLOBFS_BIN, else go build)")
	flag.IntVar(&o.mount.Samples, "samples", 300, "small files seeded for the mount part")
	flag.IntVar(&o.mount.LargeMiB, "large-mb", 256, "size in MiB of the large file the mount part reads cold and warm")
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
	store, err := newDemoStore(srv)
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
	fmt.Fprintf(w, "Listed %d files through delimiter listings.\n\n", listed)

	if o.mount.Enabled {
		if err := runMount(ctx, w, srv, files, o.mount); err != nil {
			return fmt.Errorf("mount: %w", err)
		}
	} else {
		fmt.Fprintln(w, "Skipping the FUSE mount part (-mount=false).")
	}
	fmt.Fprintln(w)

	if o.keep {
		fmt.Fprintf(w, "Azurite keeps running (in memory, pid %d):\n", srv.PID())
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
