package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRun runs the demo on a small dataset, so `go run ./e2e/demo` (and
// `make demo`) cannot rot unnoticed.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, &out, options{
		dataset: datasetSpec{TrainShards: 3, TestShards: 1, ShardSize: 1<<20 + 12345},
		mount:   mountSpec{Enabled: true, Samples: 20, LargeMiB: 8},
	})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	wants := []string{"Skipping the mount part: " + fuseUnavailable()}
	if fuseUnavailable() == "" {
		// The mount part ran: 7 dataset files and 21 more through FUSE.
		wants = []string{
			"Seeded 21 more blobs for it (20 small records, one 8.0 MiB file)",
			"blobfs: mounted demo at ",
			"└── … and 16 more files",
			"-rw-r--r-- model-8MiB.bin",
			"Listed 28 files in 9 directories",
			"cold (first read: from Azurite)",
			"warm (second read: from cache)",
			"SHA-256 matches",
			"Read the other 27 files",
			"the blobfs daemon exited.",
		}
	}
	for _, want := range append(wants,
		"Seeded 8 blobs",
		"├── train/",
		"shard-0002.bin",
		"val/",
		"model.safetensors",
		"encoder.layer.0.weight",
		"Read back 7 files",
		"Listed 7 files",
		"Azurite stopped.",
	) {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestRunWithoutFUSE: where FUSE cannot be mounted (no root, no
// /dev/fuse), the demo says why, skips the mount part and still succeeds.
func TestRunWithoutFUSE(t *testing.T) {
	saved := fuseUnavailable
	fuseUnavailable = func() string { return "mounting needs root here" }
	defer func() { fuseUnavailable = saved }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, &out, options{
		dataset: datasetSpec{TrainShards: 1, TestShards: 1, ShardSize: 4096},
		mount:   mountSpec{Enabled: true, Samples: 3, LargeMiB: 1},
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"Skipping the mount part: mounting needs root here.", "Azurite stopped."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "blobfs: mounted") {
		t.Error("mounted although FUSE is unavailable")
	}
}

func TestSafetensorsLayout(t *testing.T) {
	b := safetensors()
	if len(b) < 8 {
		t.Fatal("too short")
	}
	n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16 | int(b[3])<<24
	if (8+n)%8 != 0 || b[8] != '{' {
		t.Fatalf("header length %d, first byte %q", n, b[8])
	}
	const tensorBytes = 4 * (256*512 + 512 + 512*10)
	if len(b) != 8+n+tensorBytes {
		t.Fatalf("file is %d bytes, want %d", len(b), 8+n+tensorBytes)
	}
}
