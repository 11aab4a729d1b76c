package azstore_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/blobfs/blobfs/blob"
)

// TestArchiveTier: a blob moved to the Archive tier is reported as such by
// Stat and List (so the filesystem can refuse to open it with a clear
// error), and a read of it, where the service refuses one, is ErrArchived.
func TestArchiveTier(t *testing.T) {
	name := newContainer(t)
	s := newStore(t, testConfig(srv.BlobEndpoint(), name))
	if _, err := s.Put(ctxT(t), "cold/shard.tar", []byte("archived bytes"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	key, err := container.NewSharedKeyCredential(srv.Account(), srv.Key())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := container.NewClientWithSharedKeyCredential(srv.BlobEndpoint()+"/"+name, key,
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: srv.Transport()}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.NewBlobClient("cold/shard.tar").SetTier(ctxT(t), sdkblob.AccessTierArchive, nil); err != nil {
		t.Fatalf("set tier: %v", err)
	}
	a, err := s.Stat(ctxT(t), "cold/shard.tar")
	if err != nil || !a.Archived() {
		t.Fatalf("Stat after archiving = tier %q, %v; want %q", a.AccessTier, err, blob.TierArchive)
	}
	page, err := s.List(ctxT(t), blob.ListOptions{Prefix: "cold/"})
	if err != nil || len(page.Blobs) != 1 || !page.Blobs[0].Archived() {
		t.Fatalf("List after archiving = %+v, %v", page.Blobs, err)
	}
	p := make([]byte, 4)
	if _, err := s.ReadAt(ctxT(t), "cold/shard.tar", "", p, 0); err != nil && !errors.Is(err, blob.ErrArchived) {
		t.Fatalf("read of an archived blob: %v, want ErrArchived (or success where the emulator allows it)", err)
	} else if err == nil {
		t.Log("Azurite serves reads of archived blobs; Azure answers 409 BlobArchived, mapped to ErrArchived")
	}
}
