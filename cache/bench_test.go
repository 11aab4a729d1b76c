package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// Benchmarks per block size; b.SetBytes makes `go test -bench` report MB/s
// of bytes delivered to the reader. Requests are 1 MiB (a FUSE read with
// MaxWrite/max_pages at 1 MiB) unless named otherwise.
//
//	go test -run '^$' -bench . -benchtime 2s ./cache/
//
// Results and the block-size decision are in DefaultBlockSize's comment.

var benchBlockSizes = []int64{256 << 10, 1 << 20, 4 << 20, 16 << 20}

const benchReq = 1 << 20

// localFetch serves a fixed pattern from memory: a backend with no latency,
// so the benchmark measures the cache's own costs.
func localFetch(size int64) FetchFunc {
	pattern := make([]byte, 1<<20)
	fillPattern(1, pattern, 0)
	return func(_ context.Context, p []byte, off int64) (int, error) {
		for n := 0; n < len(p); {
			n += copy(p[n:], pattern[(off+int64(n))%int64(len(pattern)):])
		}
		return len(p), nil
	}
}

func benchObject(name string, size int64) Object { return object(name, size) }

func forBlockSizes(b *testing.B, f func(b *testing.B, bs int64)) {
	for _, bs := range benchBlockSizes {
		b.Run(fmt.Sprintf("block=%dKiB", bs>>10), func(b *testing.B) { f(b, bs) })
	}
}

// readLoop reads size bytes of obj sequentially in benchReq requests,
// round and round, b.N requests in all.
func readLoop(b *testing.B, c *Cache, obj Object, fetch FetchFunc) {
	buf := make([]byte, benchReq)
	b.SetBytes(benchReq)
	b.ResetTimer()
	var off int64
	for range b.N {
		if _, err := c.ReadAt(context.Background(), obj, fetch, buf, off); err != nil {
			b.Fatal(err)
		}
		if off += benchReq; off >= obj.Size {
			off = 0
		}
	}
}

func BenchmarkReadHitRAM(b *testing.B) {
	forBlockSizes(b, func(b *testing.B, bs int64) {
		c := openCache(b, Config{BlockSize: bs, MemBudgetBytes: 512 << 20})
		size := int64(128 << 20)
		obj, fetch := benchObject("ram", size), localFetch(size)
		for off := int64(0); off < size; off += bs { // warm
			if err := c.Fill(context.Background(), obj, fetch, off, bs, FillOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		c.ramWait()
		readLoop(b, c, obj, fetch)
		if s := c.Stats(); s.Fetches > uint64(size/bs)+8 {
			b.Fatalf("RAM tier did not hold the object: %d fetches", s.Fetches)
		}
	})
}

func BenchmarkReadHitDisk(b *testing.B) {
	forBlockSizes(b, func(b *testing.B, bs int64) {
		c := openCache(b, Config{BlockSize: bs, Dir: b.TempDir(), DiskBudgetBytes: 2 << 30, MemBudgetBytes: -1})
		size := int64(256 << 20)
		obj, fetch := benchObject("disk", size), localFetch(size)
		if err := c.Fill(context.Background(), obj, fetch, 0, size, FillOptions{}); err != nil {
			b.Fatal(err)
		}
		c.ramWait()
		fetches := c.Stats().Fetches
		readLoop(b, c, obj, fetch)
		if c.Stats().Fetches != fetches {
			b.Fatal("disk hits fetched")
		}
	})
}

// BenchmarkMissLocalFetch is a cold sequential read: every block is fetched
// (from memory), hashed, written to disk and offered to RAM.
func BenchmarkMissLocalFetch(b *testing.B) {
	forBlockSizes(b, func(b *testing.B, bs int64) {
		c := openCache(b, Config{BlockSize: bs, Dir: b.TempDir(), DiskBudgetBytes: 1 << 30, MemBudgetBytes: 256 << 20})
		size := int64(64 << 20)
		fetch := localFetch(size)
		buf := make([]byte, benchReq)
		b.SetBytes(benchReq)
		b.ResetTimer()
		obj := benchObject("miss0", size)
		var off int64
		for i := range b.N {
			if off >= size { // next object: everything cold again
				obj, off = benchObject(fmt.Sprint("miss", i), size), 0
			}
			if _, err := c.ReadAt(context.Background(), obj, fetch, buf, off); err != nil {
				b.Fatal(err)
			}
			off += benchReq
		}
		b.StopTimer()
		c.ramWait()
	})
}

// BenchmarkRandom4KCold reads 4 KiB at random offsets of never-read data
// and reports the backend bytes each read costs: the read amplification a
// block size imposes on cold random access.
func BenchmarkRandom4KCold(b *testing.B) {
	forBlockSizes(b, func(b *testing.B, bs int64) {
		c := openCache(b, Config{BlockSize: bs, Dir: b.TempDir(), DiskBudgetBytes: 4 << 30, MemBudgetBytes: -1})
		size := int64(1 << 30)
		fetch := localFetch(size)
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 4096)
		b.SetBytes(4096)
		b.ResetTimer()
		for i := range b.N {
			obj := benchObject(fmt.Sprint("rand", i), size) // always cold
			if _, err := c.ReadAt(context.Background(), obj, fetch, buf, rng.Int64N(size-4096)); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(c.Stats().FetchedBytes)/float64(b.N), "fetchedB/op")
		c.ramWait()
	})
}
