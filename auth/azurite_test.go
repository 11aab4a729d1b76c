package auth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/blobfs/blobfs/auth/entratest"
	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/config"
)

// End to end over HTTPS: workload identity through the Entra stand-in
// yields tokens Azurite (--oauth basic) accepts, through the same
// NewContainerClient azstore uses; once the identity is revoked and its
// token expired, the storage call fails with an error that still wraps
// blob.ErrPermission after azcore's pipeline; shared key and SAS reach the
// same container.
func TestAzuriteOAuthWithEntraStandIn(t *testing.T) {
	lc := newLeakCheck(t)
	az := azurite.StartT(t, azurite.Options{HTTPS: true, OAuth: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const name = "auth-e2e"
	if err := az.CreateContainer(ctx, name); err != nil {
		t.Fatal(err)
	}
	containerURL := az.BlobEndpoint() + "/" + name
	storageOpts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: az.Transport()},
		// Fail fast: the test itself polls.
		Retry: policy.RetryOptions{MaxRetries: -1},
	}}

	srv := standIn(t, lc, entratest.Options{Lifetime: 2 * time.Second})
	tokenFile := filepath.Join(t.TempDir(), "token")
	srv.SetAssertion(tenantID, clientID, writeFederatedToken(t, lc, tokenFile))
	c := mustNew(t, lc, config.Storage{
		Account: azurite.Account, Container: name, Endpoint: az.BlobEndpoint(),
		ClientID: clientID, TenantID: tenantID, TokenFile: tokenFile, AuthorityHost: srv.AuthorityHost(),
	}, optsFor(srv, lc))

	// The raw SDK with blobfs's token credential.
	raw, err := container.NewClient(containerURL, c.TokenCredential(), storageOpts)
	if err != nil {
		t.Fatal(err)
	}
	list(t, lc, raw)
	// And through the one-liner azstore uses.
	cl, err := c.NewContainerClient(containerURL, storageOpts)
	if err != nil {
		t.Fatal(err)
	}
	list(t, lc, cl)
	if srv.Stats(clientID).Issued == 0 {
		t.Fatal("no token came from the stand-in")
	}

	// Revoked: once the last token has expired, listing fails with an
	// error wrapping blob.ErrPermission (what azstore maps to EACCES).
	srv.Revoke(clientID)
	eventually(t, "storage calls to fail with blob.ErrPermission after revocation", func() bool {
		_, err := cl.NewListBlobsFlatPager(nil).NextPage(ctx)
		var re *azcore.ResponseError
		switch {
		case err == nil:
			return false // the last token is still good
		case errors.Is(lc.err(err), blob.ErrPermission):
			return true
		case errors.As(err, &re) && (re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden):
			// A token that expired in flight: azstore maps this to
			// ErrPermission too. Not what this test waits for.
			t.Logf("storage rejected a token at the edge of its life: %d", re.StatusCode)
			return false
		}
		t.Fatalf("revoked identity: list err = %v, want one wrapping blob.ErrPermission", err)
		return false
	})
	srv.Restore(clientID)
	eventually(t, "storage calls to recover", func() bool {
		_, err := cl.NewListBlobsFlatPager(nil).NextPage(ctx)
		return err == nil
	})

	// Shared key and SAS against the same container.
	key := mustNew(t, lc, config.Storage{Endpoint: az.BlobEndpoint(), AccountKey: config.Secret(azurite.Key)}, Options{Logger: lc.logger()})
	if key.Kind() != KindSharedKey || key.Identity().Account != azurite.Account {
		t.Fatalf("key credential: kind %v account %q", key.Kind(), key.Identity().Account)
	}
	kc, err := key.NewContainerClient(containerURL, storageOpts)
	if err != nil {
		t.Fatal(err)
	}
	list(t, lc, kc)
	sasURL, err := kc.GetSASURL(sas.ContainerPermissions{Read: true, List: true}, time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(sasURL)
	if err != nil {
		t.Fatal(err)
	}
	lc.secret(u.Query().Get("sig"))
	sc := mustNew(t, lc, config.Storage{Account: azurite.Account, SAS: config.Secret(u.RawQuery)}, Options{Logger: lc.logger()})
	scl, err := sc.NewContainerClient(containerURL, storageOpts)
	if err != nil {
		t.Fatal(err)
	}
	list(t, lc, scl)
}

func list(t *testing.T, lc *leakCheck, c *container.Client) {
	t.Helper()
	if _, err := c.NewListBlobsFlatPager(nil).NextPage(context.Background()); err != nil {
		t.Fatalf("list blobs: %v", lc.err(err))
	}
}
