package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/blobtest"
	"github.com/blobfs/blobfs/blob/memblob"
)

// The wrapper must stay a conformant store.
func TestInstrumentedConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Fixture {
		s := memblob.New()
		return blobtest.Fixture{
			Store:          InstrumentStore(s, NewRegistry()),
			Missing:        InstrumentStore(memblob.NewMissing(), NewRegistry()),
			InjectThrottle: s.InjectThrottle,
			MaxRetries:     3,
		}
	})
}

func TestCountsByResult(t *testing.T) {
	ctx := context.Background()
	reg := NewRegistry()
	s := InstrumentStore(memblob.New(), reg)
	if _, err := s.Put(ctx, "a", []byte("12345"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatal(err)
	}
	p := make([]byte, 5)
	if _, err := s.ReadAt(ctx, "a", "", p, 0); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP blobfs_backend_requests_total Blob storage operations by operation and result (ok, not_found, stale, exists, permission, throttled, unavailable, checksum, canceled, error).
# TYPE blobfs_backend_requests_total counter
blobfs_backend_requests_total{op="put",result="ok"} 1
blobfs_backend_requests_total{op="read",result="ok"} 1
blobfs_backend_requests_total{op="stat",result="not_found"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "blobfs_backend_requests_total"); err != nil {
		t.Fatal(err)
	}
	bytesWant := `
# HELP blobfs_backend_bytes_total Payload bytes moved to and from blob storage.
# TYPE blobfs_backend_bytes_total counter
blobfs_backend_bytes_total{direction="read"} 5
blobfs_backend_bytes_total{direction="write"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(bytesWant), "blobfs_backend_bytes_total"); err != nil {
		t.Fatal(err)
	}
}
