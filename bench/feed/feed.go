// Package feed simulates what a GPU training job asks of storage, so that
// benchmarks can report the number users care about: how long the GPUs
// wait.
//
// G consumers ("GPUs") each have W reader workers (DataLoader workers).
// Every epoch the shards are shuffled (one permutation per epoch, as a
// DistributedSampler does) and dealt round-robin to the GPUs; a GPU's
// workers read its shards whole, in order, at most Prefetch shards ahead
// (DataLoader's prefetch_factor × workers), and hand each to the GPU,
// which spends ShardBytes / (Demand / G) seconds on it. Time the GPU
// spends waiting for its next shard is stall; stall fraction is stall /
// epoch time, per GPU, averaged. The first shard's wait counts: that is
// the cold start a real job pays.
package feed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// Shard is one file of the dataset.
type Shard struct {
	Name string
	Size int64
}

// Source reads a whole shard and returns how many bytes it read. It is
// called from many goroutines at once.
type Source interface {
	ReadShard(ctx context.Context, name string, buf []byte) (int64, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, name string, buf []byte) (int64, error)

// ReadShard implements Source.
func (f SourceFunc) ReadShard(ctx context.Context, name string, buf []byte) (int64, error) {
	return f(ctx, name, buf)
}

// Config is one simulated job.
type Config struct {
	Shards  []Shard
	GPUs    int
	Workers int // reader workers per GPU
	// Prefetch is how many shards a GPU's workers may hold ready
	// (default 2 × Workers, DataLoader's prefetch_factor=2).
	Prefetch int
	// Demand is the bytes per second all GPUs together consume when never
	// starved.
	Demand float64
	// Seed picks the epochs' shuffles; epoch e uses Seed+e.
	Seed uint64
}

// Epoch is what one epoch measured.
type Epoch struct {
	Demand float64       // the demand it ran at, bytes/s
	Wall   time.Duration // first request to last shard consumed
	Stall  float64       // mean over GPUs of wait / (wait + compute)
	// SteadyStall is Stall without each GPU's wait for its first shard:
	// the share of the epoch the GPUs starved once running. A cold start
	// is paid once per epoch however long the epoch is, so in the short
	// epochs a benchmark can afford it weighs far more in Stall than it
	// would in a real job's; SteadyStall does not depend on the epoch's
	// length.
	SteadyStall float64
	Bytes       int64
	// FirstShard is the mean wait for each GPU's first shard (time to
	// first batch).
	FirstShard time.Duration
}

// Throughput is the bytes per second the epoch delivered.
func (e Epoch) Throughput() float64 { return float64(e.Bytes) / e.Wall.Seconds() }

func (e Epoch) String() string {
	return fmt.Sprintf("stall %.2f%% (%.2f%% after the first shard), %v, %.0f MB/s, first shard %v", 100*e.Stall, 100*e.SteadyStall,
		e.Wall.Round(time.Millisecond), e.Throughput()/1e6, e.FirstShard.Round(time.Millisecond))
}

func (c Config) validate() error {
	switch {
	case len(c.Shards) == 0:
		return errors.New("feed: no shards")
	case c.GPUs < 1 || c.Workers < 1:
		return fmt.Errorf("feed: %d GPUs × %d workers: want at least 1 each", c.GPUs, c.Workers)
	case c.Demand <= 0:
		return fmt.Errorf("feed: demand %v B/s: want positive", c.Demand)
	}
	return nil
}

// Order returns epoch's shuffled shard order.
func (c Config) Order(epoch int) []Shard {
	order := append([]Shard(nil), c.Shards...)
	sort.Slice(order, func(i, j int) bool { return order[i].Name < order[j].Name })
	rng := rand.New(rand.NewPCG(c.Seed+uint64(epoch), 0x9e3779b97f4a7c15))
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

// Run runs one epoch against src.
func Run(ctx context.Context, c Config, epoch int, src Source) (Epoch, error) {
	if err := c.validate(); err != nil {
		return Epoch{}, err
	}
	if c.Prefetch <= 0 {
		c.Prefetch = 2 * c.Workers
	}
	order := c.Order(epoch)
	perGPU := make([][]Shard, c.GPUs)
	for i, s := range order {
		perGPU[i%c.GPUs] = append(perGPU[i%c.GPUs], s)
	}
	rate := c.Demand / float64(c.GPUs) // bytes per second per GPU
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	start := time.Now()
	type gpuResult struct {
		wait, compute, first time.Duration
		bytes                int64
		err                  error
	}
	results := make([]gpuResult, c.GPUs)
	var wg sync.WaitGroup
	for g := range c.GPUs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[g]
			ready, taken := feedGPU(ctx, src, perGPU[g], c.Workers, c.Prefetch)
			for i := range perGPU[g] {
				t0 := time.Now()
				var got shardRead
				ok := true
				select {
				case got = <-ready[i]:
					taken()
				case <-ctx.Done():
					ok = false
				}
				wait := time.Since(t0)
				if i == 0 {
					r.first = wait
				}
				r.wait += wait
				if !ok || got.err != nil {
					if ok {
						r.err = got.err
					} else {
						r.err = ctx.Err()
					}
					cancel()
					return
				}
				r.bytes += got.n
				compute := time.Duration(float64(got.n) / rate * float64(time.Second))
				time.Sleep(compute)
				r.compute += compute
			}
		}()
	}
	wg.Wait()
	out := Epoch{Wall: time.Since(start)}
	// The GPU whose read failed cancels the others: report its error, not
	// their cancellation.
	var firstErr error
	for _, r := range results {
		if r.err != nil && (firstErr == nil || errors.Is(firstErr, context.Canceled)) {
			firstErr = r.err
		}
	}
	if firstErr != nil {
		return out, fmt.Errorf("feed: epoch %d: %w", epoch, firstErr)
	}
	for _, r := range results {
		if total := r.wait + r.compute; total > 0 {
			out.Stall += r.wait.Seconds() / total.Seconds()
		}
		if total := r.wait + r.compute - r.first; total > 0 {
			out.SteadyStall += (r.wait - r.first).Seconds() / total.Seconds()
		}
		out.Bytes += r.bytes
		out.FirstShard += r.first
	}
	out.Stall /= float64(c.GPUs)
	out.SteadyStall /= float64(c.GPUs)
	out.FirstShard /= time.Duration(c.GPUs)
	return out, nil
}

type shardRead struct {
	n   int64
	err error
}

// feedGPU starts workers reading shards in order, at most prefetch ahead of
// the consumer, and returns one channel per shard (DataLoader delivers in
// order too) and the function the consumer calls when it has taken one,
// which lets the workers start another.
func feedGPU(ctx context.Context, src Source, shards []Shard, workers, prefetch int) ([]chan shardRead, func()) {
	ready := make([]chan shardRead, len(shards))
	for i := range ready {
		ready[i] = make(chan shardRead, 1)
	}
	tokens := make(chan struct{}, prefetch)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range shards {
			select {
			case tokens <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range workers {
		go func() {
			var buf []byte
			for i := range next {
				if int64(cap(buf)) < shards[i].Size {
					buf = make([]byte, shards[i].Size)
				}
				n, err := src.ReadShard(ctx, shards[i].Name, buf[:shards[i].Size])
				ready[i] <- shardRead{n: n, err: err}
			}
		}()
	}
	return ready, func() { <-tokens }
}

// Sustainable finds the highest demand the source feeds with a stall
// fraction of at most limit: from start it raises the demand by factor
// per step while the stall stays within limit, or, if start already
// stalls more, lowers it by factor until it does not. Then it narrows the
// bracket between the last demand within limit and the first beyond it by
// refine bisections (geometric midpoints), so that two sources a step
// apart are told apart: with factor 1.4 and refine 2 the answer is within
// 9% of the true limit rather than 40%. Each step is one epoch, after
// before(step) runs. It returns that demand (0 if no step stayed within
// limit) and every step's result.
func Sustainable(ctx context.Context, c Config, start, factor, limit float64, steps, refine int, src Source, before func(step int)) (float64, []Epoch, error) {
	var seen []Epoch
	probe := func(demand float64) (bool, error) {
		step := len(seen)
		if before != nil {
			before(step)
		}
		c.Demand = demand
		e, err := Run(ctx, c, 1000+step, src)
		if err != nil {
			return false, err
		}
		e.Demand = demand
		seen = append(seen, e)
		return e.Stall <= limit, nil
	}
	lo, err := searchDemand(start, factor, steps, refine, probe)
	return lo, seen, err
}

// searchDemand is Sustainable's search, over probe (whether a demand is
// fed within the limit): the highest demand found within it, 0 if none.
func searchDemand(start, factor float64, steps, refine int, probe func(demand float64) (bool, error)) (float64, error) {
	// lo is the highest demand seen within the limit (0: none), hi the
	// lowest beyond it (0: none).
	var lo, hi float64
	demand := start
	for range steps {
		ok, err := probe(demand)
		if err != nil {
			return lo, err
		}
		if ok {
			lo = demand
			if hi > 0 {
				break // came down to it
			}
			demand *= factor
			continue
		}
		hi = demand
		if lo > 0 {
			break // went up past it
		}
		demand /= factor
	}
	for range refine {
		if lo == 0 || hi == 0 {
			break
		}
		mid := math.Sqrt(lo * hi)
		ok, err := probe(mid)
		if err != nil {
			return lo, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}
