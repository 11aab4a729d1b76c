package feed

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func shards(n int, size int64) []Shard {
	out := make([]Shard, n)
	for i := range out {
		out[i] = Shard{Name: fmt.Sprintf("shard-%03d", i), Size: size}
	}
	return out
}

// A source that is never slow starves nobody; one far slower than the
// demand makes the GPUs wait most of the time. Every shard is read once.
func TestStallReflectsSourceSpeed(t *testing.T) {
	var reads atomic.Int64
	instant := SourceFunc(func(ctx context.Context, name string, buf []byte) (int64, error) {
		reads.Add(1)
		return int64(len(buf)), nil
	})
	c := Config{Shards: shards(40, 1000), GPUs: 2, Workers: 2, Demand: 400e3} // 40 KB at 400 KB/s: ~100 ms
	e, err := Run(context.Background(), c, 0, instant)
	if err != nil {
		t.Fatal(err)
	}
	if reads.Load() != 40 || e.Bytes != 40000 {
		t.Fatalf("read %d shards, %d bytes; want 40, 40000", reads.Load(), e.Bytes)
	}
	if e.Stall > 0.2 {
		t.Errorf("instant source: stall %.2f, want near 0", e.Stall)
	}
	slow := SourceFunc(func(ctx context.Context, name string, buf []byte) (int64, error) {
		time.Sleep(20 * time.Millisecond) // 4 workers: 200 shards/s × 1000 B = 200 KB/s
		return int64(len(buf)), nil
	})
	c.Demand = 4e6 // 10× what the slow source delivers
	e, err = Run(context.Background(), c, 0, slow)
	if err != nil {
		t.Fatal(err)
	}
	if e.Stall < 0.5 {
		t.Errorf("source 10× slower than demand: stall %.2f, want most of the time", e.Stall)
	}
}

func TestOrderIsAPermutationPerEpoch(t *testing.T) {
	c := Config{Shards: shards(50, 1), Seed: 3}
	a, b := c.Order(0), c.Order(1)
	seen := map[string]bool{}
	same := true
	for i := range a {
		seen[a[i].Name] = true
		same = same && a[i] == b[i]
	}
	if len(seen) != 50 {
		t.Errorf("epoch 0 order has %d distinct shards, want 50", len(seen))
	}
	if same {
		t.Error("two epochs shuffled alike")
	}
	if fmt.Sprint(c.Order(0)) != fmt.Sprint(a) {
		t.Error("the same epoch shuffled differently twice")
	}
}

func TestErrorsStopTheEpoch(t *testing.T) {
	boom := errors.New("boom")
	src := SourceFunc(func(ctx context.Context, name string, buf []byte) (int64, error) {
		if name == "shard-007" {
			return 0, boom
		}
		return int64(len(buf)), nil
	})
	_, err := Run(context.Background(), Config{Shards: shards(20, 10), GPUs: 2, Workers: 3, Demand: 1e9}, 0, src)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := Run(context.Background(), Config{GPUs: 1, Workers: 1, Demand: 1}, 0, src); err == nil {
		t.Error("no shards: no error")
	}
}
