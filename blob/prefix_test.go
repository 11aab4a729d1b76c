package blob_test

import (
	"context"
	"testing"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/blobtest"
	"github.com/blobfs/blobfs/blob/memblob"
)

// The prefixed view must itself be a conformant Store, and must not see or
// touch anything outside its prefix.
func TestWithPrefixConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Fixture {
		base := memblob.New()
		// Neighbours that sort before and after the prefix.
		for _, n := range []string{"team-a", "team-a0/x", "team-a.txt", "zzz"} {
			if _, err := base.Put(context.Background(), n, []byte("outside"), blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		return blobtest.Fixture{
			Store:          blob.WithPrefix(base, "/team-a/"),
			Missing:        blob.WithPrefix(memblob.NewMissing(), "team-a"),
			InjectThrottle: base.InjectThrottle,
			MaxRetries:     3,
		}
	})
}

func TestWithPrefixIsolation(t *testing.T) {
	ctx := context.Background()
	base := memblob.New()
	view := blob.WithPrefix(base, "vol1")
	if _, err := view.Put(ctx, "data/x", []byte("1"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := base.Stat(ctx, "vol1/data/x"); err != nil {
		t.Fatalf("write through the view did not land under the prefix: %v", err)
	}
	if blob.WithPrefix(base, "") != blob.Store(base) {
		t.Fatal("empty prefix should return the store itself")
	}
}
