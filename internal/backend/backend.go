// Package backend opens the Blob container a mount (or the prefetch CLI,
// or the CSI driver) talks to: configuration → credential → azstore, and a
// first request that turns the common mistakes into clear errors before
// anything is mounted.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobfs/blobfs/auth"
	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/config"
)

// Sentinel causes of a failed Open, each with a message a user can act on.
var (
	ErrContainerMissing = errors.New("container does not exist")
	ErrAccessDenied     = errors.New("access denied by the storage account")
	ErrUnreachable      = errors.New("storage endpoint unreachable")
)

// Options are Open's inputs besides the storage settings.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Transport overrides the HTTP client (tests: loopback-only).
	Transport policy.Transporter
	// DisableRangeChecksums turns off per-range MD5 verification of reads.
	DisableRangeChecksums bool
}

// Backend is an opened container.
type Backend struct {
	// Store is the container, or the subdirectory's view of it.
	Store blob.Store
	// Raw is the whole container (the cache keys by full blob names).
	Raw        *azstore.Store
	Credential *auth.Credential
	// Account and Container identify the data for the node cache's keys.
	Account, Container string
	// URL is the blob service endpoint.
	URL string
}

// ServiceURL returns the blob endpoint the settings name.
func ServiceURL(s config.Storage) string {
	if s.Endpoint != "" {
		return strings.TrimRight(s.Endpoint, "/")
	}
	return "https://" + s.Account + ".blob.core.windows.net"
}

// Open builds the credential and the store and checks, with one listing
// request, that the container exists and the credential may read it.
func Open(ctx context.Context, s config.Storage, opts Options) (*Backend, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cred, err := auth.New(s, auth.Options{
		Transport:             opts.Transport,
		Logger:                log,
		Registerer:            opts.Registerer,
		ClientCertificateFile: s.ClientCertificateFile,
	})
	if err != nil {
		return nil, err
	}
	log.Info(cred.Describe())
	sc, err := StoreCredential(cred, s)
	if err != nil {
		return nil, err
	}
	raw, err := azstore.New(azstore.Config{
		ServiceURL:            ServiceURL(s),
		Container:             s.Container,
		Credential:            sc,
		Transport:             opts.Transport,
		MaxRetries:            retries(s.MaxRetries),
		DisableRangeChecksums: opts.DisableRangeChecksums,
		Logger:                log,
	})
	if err != nil {
		return nil, err
	}
	b := &Backend{
		Store:      blob.WithPrefix(raw, s.Subdirectory),
		Raw:        raw,
		Credential: cred,
		Account:    accountName(s, cred),
		Container:  s.Container,
		URL:        ServiceURL(s),
	}
	if err := b.Check(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// StoreCredential turns an auth credential into the azblob adapter's: the
// one place the two sum types meet. A shared key needs the key itself,
// which auth keeps inside the SDK credential, so it comes from s.
func StoreCredential(cred *auth.Credential, s config.Storage) (azstore.Credential, error) {
	switch cred.Kind() {
	case auth.KindToken:
		return azstore.TokenCredential(cred.TokenCredential()), nil
	case auth.KindSharedKey:
		account := cred.Identity().Account
		if account == "" {
			account = s.Account
		}
		return azstore.SharedKey(account, s.AccountKey.Reveal()), nil
	case auth.KindSAS:
		return azstore.SAS(cred.SAS().Reveal()), nil
	case auth.KindAnonymous:
		return azstore.Anonymous(), nil
	}
	return azstore.Credential{}, fmt.Errorf("backend: credential of unknown kind %v", cred.Kind())
}

// Check makes one small listing request and explains a failure.
func (b *Backend) Check(ctx context.Context) error {
	_, err := b.Store.List(ctx, blob.ListOptions{Delimiter: "/", MaxResults: 1})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, blob.ErrContainerNotFound):
		return fmt.Errorf("%w: container %q in account %q: create it first, or check --container: %w", ErrContainerMissing, b.Container, b.Account, err)
	case errors.Is(err, blob.ErrPermission):
		return fmt.Errorf("%w: %s may not list container %q (wrong key, expired SAS or missing role assignment 'Storage Blob Data Reader/Contributor'): %w", ErrAccessDenied, b.Credential.Describe(), b.Container, err)
	case errors.Is(err, blob.ErrUnavailable):
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, b.URL, err)
	}
	return fmt.Errorf("checking container %q: %w", b.Container, err)
}

func retries(n int) int {
	if n == 0 {
		return -1 // config's 0 means "no retries"; azstore's 0 means default
	}
	return n
}

func accountName(s config.Storage, cred *auth.Credential) string {
	if s.Account != "" {
		return s.Account
	}
	if a := cred.Identity().Account; a != "" {
		return a
	}
	// Azurite-style endpoints carry the account as the first path segment.
	if i := strings.Index(s.Endpoint, "://"); i >= 0 {
		rest := s.Endpoint[i+3:]
		if j := strings.Index(rest, "/"); j >= 0 {
			return strings.Trim(rest[j:], "/")
		}
	}
	return ""
}
