package auth

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/blobfs/blobfs/internal/config"
)

// maxTokenFileSize bounds what a token file read may return: projected
// service account tokens are a few KiB; anything far larger is a
// misconfigured path, not a token.
const maxTokenFileSize = 1 << 20

// newTokenCredential builds the azidentity credential for a token mode.
// secrets collects values the scrubber must remove from any error or log.
func newTokenCredential(mode config.AuthMode, cfg config.Storage, opts Options) (azcore.TokenCredential, Identity, *secretSet, error) {
	secrets := &secretSet{}
	id := Identity{Mode: mode, ClientID: cfg.ClientID, TenantID: cfg.TenantID}
	co := azcore.ClientOptions{Transport: opts.Transport}
	var disableDiscovery bool
	if mode != config.AuthMSI && mode != config.AuthAzCLI {
		var err error
		co.Cloud, disableDiscovery, err = authority(cfg.AuthorityHost)
		if err != nil {
			return nil, id, nil, err
		}
	}
	bad := func(err error) (azcore.TokenCredential, Identity, *secretSet, error) {
		// azidentity's constructor errors are about argument shape (a
		// tenant id with bad characters); scrub them all the same.
		return nil, id, nil, fmt.Errorf("auth mode %s: %s: %w", mode, scrub(err.Error(), secrets.values()...), config.ErrInvalid)
	}

	switch mode {
	case config.AuthWorkloadIdentity:
		id.Method = "workload identity"
		id.TokenFile = cfg.TokenFile
		// Not azidentity.WorkloadIdentityCredential: it keeps the file's
		// content for minutes, so a mount outlives the projected token the
		// kubelet already replaced (blob-csi-driver's expiring mounts). The
		// callback reads the file at every token request instead.
		cred, err := azidentity.NewClientAssertionCredential(cfg.TenantID, cfg.ClientID, assertionFromFile(cfg.TokenFile, secrets),
			&azidentity.ClientAssertionCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: disableDiscovery})
		if err != nil {
			return bad(err)
		}
		return cred, id, secrets, nil

	case config.AuthSPN:
		switch {
		case cfg.TokenFile != "":
			// BlobFuse2's spn + oauth-token-path, and the CSI driver's
			// per-pod tokens: the same client assertion, re-read each time.
			id.Method = "service principal (client assertion from token file)"
			id.TokenFile = cfg.TokenFile
			cred, err := azidentity.NewClientAssertionCredential(cfg.TenantID, cfg.ClientID, assertionFromFile(cfg.TokenFile, secrets),
				&azidentity.ClientAssertionCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: disableDiscovery})
			if err != nil {
				return bad(err)
			}
			return cred, id, secrets, nil
		case opts.ClientCertificateFile != "":
			id.Method = "service principal (certificate)"
			id.CertFile = opts.ClientCertificateFile
			data, err := readLimited(opts.ClientCertificateFile)
			if err != nil {
				return nil, id, nil, fmt.Errorf("auth mode spn: client certificate: %w: %w", err, config.ErrInvalid)
			}
			certs, key, err := azidentity.ParseCertificates(data, nil)
			if err != nil {
				return nil, id, nil, fmt.Errorf("auth mode spn: client certificate %s: %s: %w", opts.ClientCertificateFile, scrub(err.Error()), config.ErrInvalid)
			}
			cred, err := azidentity.NewClientCertificateCredential(cfg.TenantID, cfg.ClientID, certs, key,
				&azidentity.ClientCertificateCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: disableDiscovery})
			if err != nil {
				return bad(err)
			}
			return cred, id, secrets, nil
		default:
			id.Method = "service principal (client secret)"
			secrets.addFixed(cfg.ClientSecret.Reveal())
			cred, err := azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret.Reveal(),
				&azidentity.ClientSecretCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: disableDiscovery})
			if err != nil {
				return bad(err)
			}
			return cred, id, secrets, nil
		}

	case config.AuthMSI:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		id.TenantID = "" // the identity's tenant is the resource's; a configured one is unused
		switch {
		case cfg.ClientID != "":
			id.Method = "managed identity (user-assigned)"
			o.ID = azidentity.ClientID(cfg.ClientID)
		case cfg.ManagedIdentityResourceID != "":
			id.Method = "managed identity (user-assigned)"
			id.ResourceID = cfg.ManagedIdentityResourceID
			o.ID = azidentity.ResourceID(cfg.ManagedIdentityResourceID)
		default:
			id.Method = "managed identity (system-assigned)"
		}
		// Explicit msi only (ChooseMode never picks it), and without
		// DefaultAzureCredential's probe: the environment decides the
		// endpoint (IMDS on AKS nodes, IDENTITY_ENDPOINT elsewhere).
		cred, err := azidentity.NewManagedIdentityCredential(o)
		if err != nil {
			return bad(err)
		}
		return cred, id, secrets, nil

	case config.AuthAzCLI:
		id.Method = "Azure CLI login"
		id.ClientID = ""
		cred, err := azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{TenantID: cfg.TenantID})
		if err != nil {
			return bad(err)
		}
		return cred, id, secrets, nil
	}
	return nil, id, nil, fmt.Errorf("auth mode %q has no token credential: %w", mode, config.ErrInvalid)
}

// knownAuthorities are the hosts Entra ID's instance discovery knows.
// Any other host (a sovereign or private cloud, a test's stand-in) needs
// instance discovery off, or MSAL fails with "unable to resolve an
// endpoint".
var knownAuthorities = map[string]bool{
	"login.microsoftonline.com": true,
	"login.microsoft.com":       true,
	"login.windows.net":         true,
	"login.chinacloudapi.cn":    true,
	"login.microsoftonline.us":  true,
}

// authority turns the configured authority host (empty, a bare host name
// as BlobFuse2's aadendpoint allows, or an https URL) into the cloud
// configuration, and says whether instance discovery must be off.
// Setting it explicitly also keeps azidentity from reading
// AZURE_AUTHORITY_HOST behind config's back.
func authority(host string) (cloud.Configuration, bool, error) {
	host = strings.TrimSpace(host)
	if host == "" {
		return cloud.AzurePublic, false, nil
	}
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	u, err := url.Parse(host)
	if err != nil || u.Host == "" {
		return cloud.Configuration{}, false, fmt.Errorf("authority host %q is not a URL (--authority-host, AZURE_AUTHORITY_HOST, azstorage.aadendpoint): %w", host, config.ErrInvalid)
	}
	if u.Scheme != "https" {
		return cloud.Configuration{}, false, fmt.Errorf("authority host %q must be https (--authority-host, AZURE_AUTHORITY_HOST, azstorage.aadendpoint): %w", host, config.ErrInvalid)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return cloud.Configuration{ActiveDirectoryAuthorityHost: u.String()}, !knownAuthorities[strings.ToLower(u.Hostname())], nil
}

// assertionFromFile returns a client assertion callback that reads path at
// every call. The kubelet (workload identity) or the CSI node server
// (WriteTokenFile) replaces the file before the token in it expires, and
// Entra ID rejects an expired assertion, so a cached copy is exactly the
// bug this avoids. Each value read is remembered only to scrub it from
// errors.
func assertionFromFile(path string, secrets *secretSet) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		data, err := readLimited(path)
		if err != nil {
			return "", fmt.Errorf("federated token file: %w", err)
		}
		a := strings.TrimSpace(string(data))
		if a == "" {
			return "", fmt.Errorf("federated token file %s is empty", path)
		}
		secrets.add(a)
		return a, nil
	}
}

// readLimited reads a small credential file. Its errors name the path,
// never the content.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxTokenFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes; not a credential file", path, maxTokenFileSize)
	}
	return data, nil
}
