package auth

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/blobfs/blobfs/auth/entratest"
	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/config"
)

const (
	tenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	clientID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
	wiSub    = "system:serviceaccount:ray:ray-worker"
)

// isolateEnv keeps azidentity from seeing this machine's Azure settings:
// every variable it reads on its own is cleared for the test.
func isolateEnv(t *testing.T) {
	for _, v := range []string{
		"AZURE_AUTHORITY_HOST", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE",
		"AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_REGIONAL_AUTHORITY_NAME",
		"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
	} {
		t.Setenv(v, "")
	}
}

// standIn starts the Entra stand-in with tokens of the given lifetime and
// registers its tokens with the leak check.
func standIn(t *testing.T, lc *leakCheck, o entratest.Options) *entratest.Server {
	isolateEnv(t)
	srv := entratest.New(t, o)
	lc.secretsFrom(srv.Tokens)
	return srv
}

func optsFor(srv *entratest.Server, lc *leakCheck) Options {
	return Options{Transport: srv.Client(), Logger: lc.logger()}
}

// writeFederatedToken writes a new projected-token-like assertion to path,
// as the kubelet or the CSI node server would, and returns it.
func writeFederatedToken(t *testing.T, lc *leakCheck, path string) string {
	t.Helper()
	a := entratest.FederatedToken(wiSub)
	lc.secret(a)
	if err := WriteTokenFile(path, a); err != nil {
		t.Fatal(err)
	}
	return a
}

func mustNew(t *testing.T, lc *leakCheck, cfg config.Storage, o Options) *Credential {
	t.Helper()
	c, err := New(cfg, o)
	if err != nil {
		t.Fatalf("New: %v", lc.err(err))
	}
	lc.text(c.Describe())
	lc.text(fmt.Sprintf("%v %+v %#v", c, c, c))
	t.Cleanup(c.token.waitRefreshesIfAny)
	return c
}

func (s *TokenSource) waitRefreshesIfAny() {
	if s != nil {
		s.waitRefreshes()
	}
}

// eventually calls f until it returns true, failing the test after a
// generous deadline. Used only where real token lifetimes are involved;
// it asserts that something happens, never how fast.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Workload identity: the token file is read again at every refresh. The
// file is rotated before each refresh and the stand-in then accepts only
// the new assertion; every refresh succeeds and no caller sees an error.
// Short real lifetimes (2 s, refreshed at ~1.3 s) because azidentity's
// token cache runs on the real clock.
func TestWorkloadIdentityRereadsRotatedTokenFile(t *testing.T) {
	lc := newLeakCheck(t)
	srv := standIn(t, lc, entratest.Options{Lifetime: 2 * time.Second})
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	a := writeFederatedToken(t, lc, tokenFile)
	srv.SetAssertion(tenantID, clientID, a)

	c := mustNew(t, lc, config.Storage{
		ClientID: clientID, TenantID: tenantID, TokenFile: tokenFile, AuthorityHost: srv.AuthorityHost(),
	}, optsFor(srv, lc))
	if c.Kind() != KindToken || c.Mode() != config.AuthWorkloadIdentity {
		t.Fatalf("kind %v mode %v, want token/workloadidentity (chosen automatically)", c.Kind(), c.Mode())
	}
	if err := lc.err(c.Verify(context.Background())); err != nil {
		t.Fatal(err)
	}
	cred := c.TokenCredential()
	prev := mustToken(t, lc, cred)
	checkClaims(t, srv, prev, tenantID, clientID)

	const rotations = 3
	for i := 0; i < rotations; i++ {
		// The kubelet rotates the file; Entra now accepts only the new one.
		a = writeFederatedToken(t, lc, tokenFile)
		srv.SetAssertion(tenantID, clientID, a)
		eventually(t, "a refresh with the rotated token file", func() bool {
			return mustToken(t, lc, cred) != prev
		})
		if got := srv.Stats(clientID).LastAssertion; got != a {
			t.Fatalf("rotation %d: the refresh presented an old assertion: the file was not re-read", i+1)
		}
		prev = mustToken(t, lc, cred)
	}
	st := srv.Stats(clientID)
	if st.Rejected != 0 {
		t.Errorf("%d token requests rejected: a stale assertion was presented", st.Rejected)
	}
	if st.Issued < rotations+1 {
		t.Errorf("%d tokens issued, want at least %d", st.Issued, rotations+1)
	}
	if lines := lc.log.lines("level=WARN"); len(lines) > 0 {
		t.Errorf("warnings during clean rotations: %q", lines)
	}
}

// mustToken gets a storage token and fails the test on any error: callers
// must never see one while the identity is valid.
func mustToken(t *testing.T, lc *leakCheck, cred azcore.TokenCredential) string {
	t.Helper()
	tok, err := cred.GetToken(context.Background(), storageReq)
	if err != nil {
		t.Fatalf("GetToken: %v", lc.err(err))
	}
	return tok.Token
}

// checkClaims checks the token has the shape Azurite's basic OAuth accepts.
func checkClaims(t *testing.T, srv *entratest.Server, tok, tenant, client string) {
	t.Helper()
	claims, err := srv.Claims(tok)
	if err != nil {
		t.Fatalf("token not from the stand-in: %v", err)
	}
	if claims["iss"] != "https://sts.windows.net/"+tenant+"/" || claims["aud"] != entratest.StorageAudience || claims["appid"] != client {
		t.Errorf("claims iss=%v aud=%v appid=%v, want the stand-in's storage token for %s in %s", claims["iss"], claims["aud"], claims["appid"], client, tenant)
	}
}

// A revoked identity: once the last token expires, operations fail with
// an error wrapping blob.ErrPermission, one error line names client and
// tenant (and no token), and after the identity is restored the source
// recovers by itself.
func TestRevokedWorkloadIdentityFailsThenRecovers(t *testing.T) {
	lc := newLeakCheck(t)
	srv := standIn(t, lc, entratest.Options{Lifetime: 2 * time.Second})
	tokenFile := filepath.Join(t.TempDir(), "token")
	srv.SetAssertion(tenantID, clientID, writeFederatedToken(t, lc, tokenFile))
	c := mustNew(t, lc, config.Storage{
		AuthMode: config.AuthWorkloadIdentity, ClientID: clientID, TenantID: tenantID, TokenFile: tokenFile, AuthorityHost: srv.AuthorityHost(),
	}, optsFor(srv, lc))
	cred := c.TokenCredential()
	mustToken(t, lc, cred)

	srv.Revoke(clientID)
	var err error
	eventually(t, "the revoked identity's token to expire", func() bool {
		_, err = cred.GetToken(context.Background(), storageReq)
		return lc.err(err) != nil
	})
	if !errors.Is(err, blob.ErrPermission) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("err = %v, want one wrapping blob.ErrPermission", err)
	}
	var te *TokenError
	if !errors.As(err, &te) || te.Status != 400 || !strings.Contains(te.Reason, "AADSTS7000112") {
		t.Fatalf("err = %#v, want a TokenError with the endpoint's 400 and AADSTS code", err)
	}
	if strings.Contains(te.Reason, "Trace ID") {
		t.Errorf("reason keeps the trace lines: %q", te.Reason)
	}
	if n := len(lc.log.lines("level=ERROR", clientID, tenantID)); n != 1 {
		t.Errorf("want 1 error line naming client and tenant, got %d:\n%s", n, lc.log)
	}

	srv.Restore(clientID)
	eventually(t, "recovery after the identity is restored", func() bool {
		_, err := cred.GetToken(context.Background(), storageReq)
		return err == nil
	})
	if n := len(lc.log.lines("level=INFO", "recovered", clientID)); n != 1 {
		t.Errorf("want 1 recovery line, got %d:\n%s", n, lc.log)
	}
}

// The CSI path: spn (or BlobFuse2's oauth-token-path) with a token file the
// CSI node server writes with WriteTokenFile; same re-read rule.
func TestClientAssertionFromCSITokenFile(t *testing.T) {
	lc := newLeakCheck(t)
	srv := standIn(t, lc, entratest.Options{})
	tokenFile := filepath.Join(t.TempDir(), "csi", "volume-1", "token")
	srv.SetAssertion(tenantID, clientID, writeFederatedToken(t, lc, tokenFile))
	c := mustNew(t, lc, config.Storage{
		AuthMode: config.AuthSPN, ClientID: clientID, TenantID: tenantID, TokenFile: tokenFile, AuthorityHost: srv.AuthorityHost(),
	}, optsFor(srv, lc))
	if !strings.Contains(c.Describe(), "client assertion") {
		t.Errorf("Describe = %q", c.Describe())
	}
	checkClaims(t, srv, mustToken(t, lc, c.TokenCredential()), tenantID, clientID)

	// A missing file is an auth failure (EACCES), named by path.
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	c2 := mustNew(t, lc, config.Storage{
		AuthMode: config.AuthSPN, ClientID: clientID, TenantID: tenantID, TokenFile: tokenFile, AuthorityHost: srv.AuthorityHost(),
	}, optsFor(srv, lc))
	err := lc.err(c2.Verify(context.Background()))
	if !errors.Is(err, blob.ErrPermission) || !strings.Contains(err.Error(), tokenFile) {
		t.Errorf("missing token file: err = %v, want ErrPermission naming %s", err, tokenFile)
	}
}

func TestServicePrincipalSecret(t *testing.T) {
	lc := newLeakCheck(t)
	// Leaky: the stand-in echoes a wrong secret back, as a careless
	// endpoint might; blobfs must scrub it.
	srv := standIn(t, lc, entratest.Options{LeakyErrors: true})
	secret := "s3cr3t~" + strings.Repeat("Q", 30)
	wrong := "wr0ng~" + strings.Repeat("Z", 30)
	lc.secret(secret, wrong)
	srv.SetSecret(tenantID, clientID, secret)

	c := mustNew(t, lc, config.Storage{
		ClientID: clientID, TenantID: tenantID, ClientSecret: config.Secret(secret), AuthorityHost: srv.AuthorityHost(),
	}, optsFor(srv, lc))
	if c.Mode() != config.AuthSPN || !strings.Contains(c.Describe(), "client secret") {
		t.Fatalf("mode %v, Describe %q", c.Mode(), c.Describe())
	}
	checkClaims(t, srv, mustToken(t, lc, c.TokenCredential()), tenantID, clientID)

	bad := mustNew(t, lc, config.Storage{
		AuthMode: config.AuthSPN, ClientID: clientID, TenantID: tenantID, ClientSecret: config.Secret(wrong), AuthorityHost: srv.AuthorityHost(),
	}, optsFor(srv, lc))
	err := lc.err(bad.Verify(context.Background()))
	if !errors.Is(err, blob.ErrPermission) || !strings.Contains(err.Error(), "AADSTS7000215") {
		t.Fatalf("wrong secret: err = %v, want ErrPermission with AADSTS7000215", err)
	}
	if !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("the leaky endpoint's echo was not visibly redacted: %v", err)
	}
}

func TestServicePrincipalCertificate(t *testing.T) {
	lc := newLeakCheck(t)
	srv := standIn(t, lc, entratest.Options{})
	cert, pemData := entratest.NewClientCertificate(t, "blobfs-test")
	certFile := filepath.Join(t.TempDir(), "spn.pem")
	if err := os.WriteFile(certFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	srv.SetCertificate(tenantID, clientID, cert)
	o := optsFor(srv, lc)
	o.ClientCertificateFile = certFile
	c := mustNew(t, lc, config.Storage{ClientID: clientID, TenantID: tenantID, AuthorityHost: srv.AuthorityHost()}, o)
	if c.Mode() != config.AuthSPN || !strings.Contains(c.Describe(), "certificate") {
		t.Fatalf("mode %v, Describe %q", c.Mode(), c.Describe())
	}
	checkClaims(t, srv, mustToken(t, lc, c.TokenCredential()), tenantID, clientID)
	if st := srv.Stats(clientID); st.Issued != 1 || st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}

	// Another certificate's key does not pass the stand-in's signature check.
	_, otherPEM := entratest.NewClientCertificate(t, "impostor")
	if err := os.WriteFile(certFile, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := mustNew(t, lc, config.Storage{AuthMode: config.AuthSPN, ClientID: clientID, TenantID: tenantID, AuthorityHost: srv.AuthorityHost()}, o)
	if err := lc.err(bad.Verify(context.Background())); !errors.Is(err, blob.ErrPermission) {
		t.Errorf("impostor certificate: err = %v", err)
	}
}

// Managed identity through the App Service style endpoint
// (IDENTITY_ENDPOINT/IDENTITY_HEADER), never IMDS: system-assigned, and
// user-assigned by client id and by resource id.
func TestManagedIdentity(t *testing.T) {
	lc := newLeakCheck(t)
	srv := standIn(t, lc, entratest.Options{})
	srv.SetManagedIdentityEnv(t)
	lc.secret(srv.ManagedIdentityHeader())
	const (
		sysClient = "5a5a5a5a-0000-0000-0000-000000000001"
		uaClient  = "5a5a5a5a-0000-0000-0000-000000000002"
		uaRes     = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ray-data"
		uaResCli  = "5a5a5a5a-0000-0000-0000-000000000003"
	)
	srv.AddManagedIdentity(entratest.ManagedIdentity{TenantID: tenantID, ClientID: sysClient, SystemAssigned: true})
	srv.AddManagedIdentity(entratest.ManagedIdentity{TenantID: tenantID, ClientID: uaClient})
	srv.AddManagedIdentity(entratest.ManagedIdentity{TenantID: tenantID, ClientID: uaResCli, ResourceID: uaRes})

	for _, tc := range []struct {
		name       string
		cfg        config.Storage
		wantClient string
		describe   string
	}{
		{"system-assigned", config.Storage{AuthMode: config.AuthMSI}, sysClient, "system-assigned"},
		{"user-assigned by client id", config.Storage{AuthMode: config.AuthMSI, ClientID: uaClient}, uaClient, "client 5a5a…"},
		{"user-assigned by resource id", config.Storage{AuthMode: config.AuthMSI, ManagedIdentityResourceID: uaRes}, uaResCli, "resource …/ray-data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, lc, tc.cfg, optsFor(srv, lc))
			if !strings.Contains(c.Describe(), tc.describe) {
				t.Errorf("Describe = %q, want it to mention %q", c.Describe(), tc.describe)
			}
			checkClaims(t, srv, mustToken(t, lc, c.TokenCredential()), tenantID, tc.wantClient)
		})
	}

	// A revoked managed identity is a permission error too.
	srv.Revoke(uaClient)
	c := mustNew(t, lc, config.Storage{AuthMode: config.AuthMSI, ClientID: uaClient}, optsFor(srv, lc))
	if err := lc.err(c.Verify(context.Background())); !errors.Is(err, blob.ErrPermission) {
		t.Errorf("revoked managed identity: err = %v", err)
	}
}

// Azure CLI: azidentity runs `az account get-access-token`; a fake az on
// PATH answers. Nothing reaches the network.
func TestAzureCLI(t *testing.T) {
	lc := newLeakCheck(t)
	isolateEnv(t)
	tok := entratest.FederatedToken("az-cli-user") // any JWT-shaped string
	lc.secret(tok)
	dir := t.TempDir()
	exp := time.Now().Add(time.Hour).Unix()
	script := fmt.Sprintf("#!/bin/sh\necho '{\"accessToken\":\"%s\",\"expires_on\":%d,\"tokenType\":\"Bearer\"}'\n", tok, exp)
	if err := os.WriteFile(filepath.Join(dir, "az"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))

	c := mustNew(t, lc, config.Storage{AuthMode: config.AuthAzCLI}, Options{Logger: lc.logger()})
	if got := mustToken(t, lc, c.TokenCredential()); got != tok {
		t.Errorf("token from az = %.10q…", got)
	}
	if !strings.Contains(c.Describe(), "Azure CLI") {
		t.Errorf("Describe = %q", c.Describe())
	}
}
