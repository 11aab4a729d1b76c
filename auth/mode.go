package auth

import (
	"errors"
	"fmt"

	"github.com/blobfs/blobfs/internal/config"
)

// Where each setting comes from, for error messages: the user fixes the
// one they use.
const (
	setClientID  = "client id (--client-id, AZURE_CLIENT_ID, azstorage.clientid)"
	setTenantID  = "tenant id (--tenant-id, AZURE_TENANT_ID, azstorage.tenantid)"
	setTokenFile = "federated token file (--token-file, AZURE_FEDERATED_TOKEN_FILE, azstorage.oauth-token-path)"
	setKey       = "account key (AZURE_STORAGE_ACCESS_KEY, azstorage.account-key)"
	setSAS       = "SAS token (AZURE_STORAGE_SAS_TOKEN, azstorage.sas)"
	setSPNCred   = "client secret (AZURE_STORAGE_SPN_CLIENT_SECRET, azstorage.clientsecret), certificate file or federated token file (--token-file, azstorage.oauth-token-path)"
)

// errNoMode explains how to choose when nothing says which mode to use.
// blobfs never falls back to probing the instance metadata endpoint: on a
// node that has a managed identity, a silent fallback would mount with the
// node's identity instead of failing on a forgotten setting.
var errNoMode = fmt.Errorf("no credentials configured and no auth mode set; choose one of:\n"+
	"  workload identity:  AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_FEDERATED_TOKEN_FILE (the AKS webhook injects them)\n"+
	"  shared key:         AZURE_STORAGE_ACCESS_KEY (or azstorage.account-key)\n"+
	"  SAS:                AZURE_STORAGE_SAS_TOKEN (or azstorage.sas)\n"+
	"  service principal:  AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_STORAGE_SPN_CLIENT_SECRET\n"+
	"  managed identity:   --auth-mode msi (optionally --client-id or --msi-resource-id)\n"+
	"  Azure CLI login:    --auth-mode azcli\n"+
	"  public container:   --auth-mode anonymous\n"+
	"(managed identity, Azure CLI and anonymous are never chosen automatically): %w", config.ErrInvalid)

// ChooseMode returns the auth mode New uses for cfg and, when it was chosen
// automatically, why. An explicit cfg.AuthMode (any BlobFuse2 spelling)
// wins. When it is unset, the first of these that is present decides:
//
//  1. an account key → key
//  2. a SAS token → sas
//  3. a federated token file → workloadidentity (needs client and tenant id)
//  4. a client secret or certificate file → spn (needs client and tenant id)
//
// Nothing else is guessed: managed identity, Azure CLI and anonymous access
// must be asked for, so a missing setting is an error (listing the
// choices) rather than a network probe.
func ChooseMode(cfg config.Storage, certFile string) (mode config.AuthMode, why string, err error) {
	mode, err = config.ParseAuthMode(string(cfg.AuthMode))
	if err != nil {
		return "", "", err
	}
	if mode != config.AuthAuto {
		return mode, "", nil
	}
	switch {
	case cfg.AccountKey != "":
		return config.AuthKey, "an account key is set", nil
	case cfg.SAS != "":
		return config.AuthSAS, "a SAS token is set", nil
	case cfg.TokenFile != "":
		return config.AuthWorkloadIdentity, "a federated token file is set", nil
	case cfg.ClientSecret != "":
		return config.AuthSPN, "a client secret is set", nil
	case certFile != "":
		return config.AuthSPN, "a client certificate is set", nil
	}
	return "", "", errNoMode
}

// validate names every setting mode needs and cfg lacks.
func validate(mode config.AuthMode, cfg config.Storage, certFile string) error {
	var missing []string
	need := func(ok bool, what string) {
		if !ok {
			missing = append(missing, what)
		}
	}
	switch mode {
	case config.AuthKey:
		need(cfg.AccountKey != "", setKey)
	case config.AuthSAS:
		need(cfg.SAS != "", setSAS)
	case config.AuthWorkloadIdentity:
		need(cfg.ClientID != "", setClientID)
		need(cfg.TenantID != "", setTenantID)
		need(cfg.TokenFile != "", setTokenFile)
	case config.AuthSPN:
		need(cfg.ClientID != "", setClientID)
		need(cfg.TenantID != "", setTenantID)
		need(cfg.ClientSecret != "" || certFile != "" || cfg.TokenFile != "", setSPNCred)
	case config.AuthMSI:
		if cfg.ClientID != "" && cfg.ManagedIdentityResourceID != "" {
			return fmt.Errorf("auth mode msi: set either a client id (--client-id) or a resource id (--msi-resource-id, AZURE_STORAGE_IDENTITY_RESOURCE_ID, azstorage.resid) for the user-assigned identity, not both: %w", config.ErrInvalid)
		}
	case config.AuthAzCLI, config.AuthAnonymous:
	default:
		return fmt.Errorf("auth mode %q is not supported: %w", mode, config.ErrInvalid)
	}
	if len(missing) == 0 {
		return nil
	}
	errs := make([]error, len(missing))
	for i, m := range missing {
		errs[i] = fmt.Errorf("auth mode %s: missing the %s", mode, m)
	}
	return fmt.Errorf("%w: %w", config.ErrInvalid, errors.Join(errs...))
}
