package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// Block sizes against a real blob.Store: the azstore adapter on Azurite
// (started here, loopback only). Azurite runs on the same 2 cores, so the
// absolute numbers are the emulator's; the ratios between block sizes are
// what these benchmarks are for.
//
//	go test -run '^$' -bench Azurite -benchtime 3x ./cache/

var azuriteBench struct {
	once  sync.Once
	srv   *azurite.Server
	store blob.Store
	attrs blob.Attrs
	err   error
}

const azuriteBlobSize = 64 << 20

// TestMain stops the benchmarks' Azurite, if one was started.
func TestMain(m *testing.M) {
	code := m.Run()
	if azuriteBench.srv != nil {
		azuriteBench.srv.Close()
	}
	os.Exit(code)
}

// azuriteStore starts Azurite once per test binary with one 64 MiB blob.
func azuriteStore(b *testing.B) (blob.Store, blob.Attrs) {
	a := &azuriteBench
	a.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if a.srv, a.err = azurite.Start(ctx, azurite.Options{}); a.err != nil {
			return
		}
		if a.err = a.srv.CreateContainer(ctx, "bench"); a.err != nil {
			return
		}
		tr := testenv.LoopbackTransport()
		tr.MaxIdleConnsPerHost = 32
		var s *azstore.Store
		s, a.err = azstore.New(azstore.Config{
			ServiceURL: a.srv.BlobEndpoint(),
			Container:  "bench",
			Credential: azstore.SharedKey(a.srv.Account(), a.srv.Key()),
			Transport:  &http.Client{Transport: tr},
			Logger:     quietLogger(),
		})
		if a.err != nil {
			return
		}
		data := make([]byte, azuriteBlobSize)
		fillPattern(5, data, 0)
		a.attrs, a.err = s.Put(ctx, "shard-0000.tar", data, blob.WriteOptions{})
		a.store = s
	})
	if a.err != nil {
		b.Skipf("Azurite unavailable: %v", a.err)
	}
	return a.store, a.attrs
}

func azuriteObject(a blob.Attrs) Object {
	return Object{Account: "devstoreaccount1", Container: "bench", Name: a.Name, ETag: a.ETag, Size: a.Size,
		Credential: "bench", Validate: func(context.Context) error { return nil }}
}

// BenchmarkAzuriteColdSequential reads the blob front to back in 1 MiB
// requests with an empty cache and no readahead: the backend request is
// max(request, block).
func BenchmarkAzuriteColdSequential(b *testing.B) {
	st, attrs := azuriteStore(b)
	forBlockSizes(b, func(b *testing.B, bs int64) {
		obj, fetch := azuriteObject(attrs), StoreFetch(st, attrs.Name, attrs.ETag)
		buf := make([]byte, benchReq)
		b.SetBytes(attrs.Size)
		for range b.N {
			c := openCache(b, Config{BlockSize: bs, Dir: b.TempDir(), DiskBudgetBytes: 1 << 30, MemBudgetBytes: 64 << 20})
			for off := int64(0); off < attrs.Size; off += benchReq {
				if _, err := c.ReadAt(context.Background(), obj, fetch, buf, off); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			c.Close()
			b.StartTimer()
		}
	})
}

// BenchmarkAzuriteColdFill prefetches the whole blob (what readahead and
// `blobfs prefetch` do): runs of MaxFetchBytes (8 MiB), 16 in parallel.
func BenchmarkAzuriteColdFill(b *testing.B) {
	st, attrs := azuriteStore(b)
	forBlockSizes(b, func(b *testing.B, bs int64) {
		obj, fetch := azuriteObject(attrs), StoreFetch(st, attrs.Name, attrs.ETag)
		b.SetBytes(attrs.Size)
		for range b.N {
			c := openCache(b, Config{BlockSize: bs, Dir: b.TempDir(), DiskBudgetBytes: 1 << 30, MemBudgetBytes: -1})
			if err := c.Fill(context.Background(), obj, fetch, 0, attrs.Size, FillOptions{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			c.Close()
			b.StartTimer()
		}
	})
}

// BenchmarkAzuriteCold4K reads 4 KiB at a random offset of an empty cache:
// ns/op is the latency of a cold random read.
func BenchmarkAzuriteCold4K(b *testing.B) {
	st, attrs := azuriteStore(b)
	forBlockSizes(b, func(b *testing.B, bs int64) {
		obj, fetch := azuriteObject(attrs), StoreFetch(st, attrs.Name, attrs.ETag)
		rng := rand.New(rand.NewPCG(3, 4))
		buf := make([]byte, 4096)
		b.SetBytes(4096)
		for i := range b.N {
			b.StopTimer()
			c := openCache(b, Config{BlockSize: bs, Dir: b.TempDir(), DiskBudgetBytes: 1 << 30, MemBudgetBytes: -1})
			off := rng.Int64N(attrs.Size - 4096)
			b.StartTimer()
			if _, err := c.ReadAt(context.Background(), obj, fetch, buf, off); err != nil {
				b.Fatal(fmt.Errorf("read %d at %d: %w", i, off, err))
			}
			b.StopTimer()
			c.Close()
			b.StartTimer()
		}
	})
}
