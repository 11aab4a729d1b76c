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

// A slow first shard and nothing else: the whole stall is the cold start,
// so the stall after the first shard is near zero while the stall is not.
func TestSteadyStallLeavesOutTheFirstShard(t *testing.T) {
	var first atomic.Bool
	src := SourceFunc(func(ctx context.Context, name string, buf []byte) (int64, error) {
		if first.CompareAndSwap(false, true) {
			time.Sleep(150 * time.Millisecond)
		}
		return int64(len(buf)), nil
	})
	// One GPU, one worker: its first shard is the slow one. 20 × 1000 B
	// at 100 KB/s: about 200 ms of compute.
	c := Config{Shards: shards(20, 1000), GPUs: 1, Workers: 1, Demand: 100e3}
	e, err := Run(context.Background(), c, 0, src)
	if err != nil {
		t.Fatal(err)
	}
	if e.Stall < 0.3 {
		t.Errorf("stall %.2f with a 150 ms first shard in a ~350 ms epoch, want about 0.4", e.Stall)
	}
	if e.SteadyStall > 0.1 {
		t.Errorf("stall after the first shard %.2f, want near 0: only the first shard was slow", e.SteadyStall)
	}
	if e.FirstShard < 150*time.Millisecond {
		t.Errorf("first shard %v, want at least the source's 150 ms", e.FirstShard)
	}
}

// The search brackets the limit with factor steps, up or down from the
// start, then bisects the bracket: two bisections put the answer within
// 1.4^(1/4) (9%) below the true limit, where the steps alone left 40%.
func TestSearchDemandBracketsThenBisects(t *testing.T) {
	for _, tc := range []struct {
		name             string
		start, limit     float64
		refine           int
		wantLo, wantHi   float64
		wantProbesAtMost int
	}{
		{"up, no bisection", 100, 470, 0, 470 / 1.4, 470, 6},
		{"up, two bisections", 100, 470, 2, 470 / 1.19, 470, 8},
		{"down, two bisections", 1000, 470, 2, 470 / 1.19, 470, 8},
		{"never fed", 1000, 1, 2, 0, 0, 6},
		{"always fed", 100, 1e12, 2, 100 * 1.4 * 1.4 * 1.4 * 1.4 * 1.4, 100 * 1.4 * 1.4 * 1.4 * 1.4 * 1.4, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probes := 0
			got, err := searchDemand(tc.start, 1.4, 6, tc.refine, func(d float64) (bool, error) {
				probes++
				return d <= tc.limit, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got < tc.wantLo*0.999 || got > tc.wantHi*1.001 {
				t.Errorf("found %.1f, want within [%.1f, %.1f]", got, tc.wantLo, tc.wantHi)
			}
			if probes > tc.wantProbesAtMost {
				t.Errorf("%d probes, want at most %d", probes, tc.wantProbesAtMost)
			}
		})
	}
	boom := errors.New("boom")
	if _, err := searchDemand(100, 1.4, 6, 2, func(float64) (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("a failing probe: %v, want boom", err)
	}
}
