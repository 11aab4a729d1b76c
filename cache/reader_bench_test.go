package cache

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// Reader benchmarks: the filesystem's read path (detection, readahead,
// random-read ranges) over the Azurite blob of azuriteStore, with the
// default 1 MiB blocks and a cold cache for every iteration.
//
//	go test -run '^$' -bench AzuriteReader -benchtime 3x ./cache/

// BenchmarkAzuriteReaderSequential reads the blob front to back in 1 MiB
// requests (the kernel's FUSE reads) with 64 MiB of readahead.
func BenchmarkAzuriteReaderSequential(b *testing.B) {
	st, attrs := azuriteStore(b)
	buf := make([]byte, benchReq)
	b.SetBytes(attrs.Size)
	for range b.N {
		b.StopTimer()
		c := openCache(b, Config{BlockSize: DefaultBlockSize, Dir: b.TempDir(), DiskBudgetBytes: 1 << 30, MemBudgetBytes: 64 << 20})
		r := NewReader(c, st, ReaderOptions{Account: "devstoreaccount1", Container: "bench", Identity: "bench",
			ReadaheadBytes: 64 << 20, Logger: quietLogger()})
		b.StartTimer()
		for off := int64(0); off < attrs.Size; off += benchReq {
			if _, err := r.ReadAtSized(context.Background(), attrs.Name, attrs.ETag, attrs.Size, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		r.Close()
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkAzuriteReaderRandom4K reads 4 KiB at random page-aligned
// offsets (what the kernel sends for random preads), 256 reads per
// iteration into an empty cache. ns/op is per 256 reads; fetchedB/read is
// the backend bytes each 4 KiB read cost.
func BenchmarkAzuriteReaderRandom4K(b *testing.B) {
	st, attrs := azuriteStore(b)
	const reads = 256
	rng := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 4096)
	b.SetBytes(reads * 4096)
	var fetched uint64
	for range b.N {
		b.StopTimer()
		c := openCache(b, Config{BlockSize: DefaultBlockSize, Dir: b.TempDir(), DiskBudgetBytes: 1 << 30, MemBudgetBytes: 64 << 20})
		r := NewReader(c, st, ReaderOptions{Account: "devstoreaccount1", Container: "bench", Identity: "bench",
			ReadaheadBytes: 64 << 20, Logger: quietLogger()})
		b.StartTimer()
		for range reads {
			off := rng.Int64N(attrs.Size/4096) * 4096
			if _, err := r.ReadAtSized(context.Background(), attrs.Name, attrs.ETag, attrs.Size, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		time.Sleep(20 * time.Millisecond) // let any background readahead land in the count
		fetched += c.Stats().FetchedBytes
		r.Close()
		c.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(fetched)/float64(b.N*reads), "fetchedB/read")
}
