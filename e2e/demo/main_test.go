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
	err := run(ctx, &out, options{dataset: datasetSpec{TrainShards: 3, TestShards: 1, ShardSize: 1<<20 + 12345}})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Seeded 8 blobs",
		"├── train/",
		"shard-0002.bin",
		"val/",
		"model.safetensors",
		"encoder.layer.0.weight",
		"Read back 7 files",
		"Listed 7 files",
		"Azurite stopped.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
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
