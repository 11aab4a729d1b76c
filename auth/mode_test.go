package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/blobfs/blobfs/internal/config"
	"github.com/blobfs/blobfs/internal/testenv"
)

var (
	testKey    = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 64)))
	testSAS    = "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2099-01-01T00:00:00Z&sig=c2lnbmF0dXJlLXNlY3JldC12YWx1ZQ%3D%3D"
	testSecret = "spn-secret~0123456789abcdef"
)

// noNetworkEnv makes sure that even a mistaken token request in these
// table tests could only reach a dead loopback port, never IMDS.
func noNetworkEnv(t *testing.T) Options {
	isolateEnv(t)
	t.Setenv("IDENTITY_ENDPOINT", "https://127.0.0.1:1/msi/token")
	t.Setenv("IDENTITY_HEADER", "unused")
	return Options{Transport: &http.Client{Transport: testenv.LoopbackTransport()}}
}

func TestModeSelection(t *testing.T) {
	lc := newLeakCheck(t)
	lc.secret(testKey, testSAS, testSecret, "c2lnbmF0dXJlLXNlY3JldC12YWx1ZQ")
	opts := noNetworkEnv(t)
	opts.Logger = lc.logger()
	wi := config.Storage{ClientID: clientID, TenantID: tenantID, TokenFile: "/var/run/secrets/azure/tokens/azure-identity-token"}

	type tc struct {
		name     string
		cfg      config.Storage
		certFile string
		wantMode config.AuthMode
		wantKind Kind
		wantAuto bool
		// wantErr: substrings of the error; the error must wrap
		// config.ErrInvalid.
		wantErr []string
	}
	with := func(base config.Storage, f func(*config.Storage)) config.Storage { f(&base); return base }
	for _, c := range []tc{
		// Automatic choice, in order.
		{name: "auto: key", cfg: config.Storage{Account: "acct", AccountKey: config.Secret(testKey)}, wantMode: config.AuthKey, wantKind: KindSharedKey, wantAuto: true},
		{name: "auto: key beats sas and token file", cfg: with(wi, func(s *config.Storage) {
			s.Account, s.AccountKey, s.SAS = "acct", config.Secret(testKey), config.Secret(testSAS)
		}), wantMode: config.AuthKey, wantKind: KindSharedKey, wantAuto: true},
		{name: "auto: sas", cfg: config.Storage{SAS: config.Secret(testSAS)}, wantMode: config.AuthSAS, wantKind: KindSAS, wantAuto: true},
		{name: "auto: sas beats token file", cfg: with(wi, func(s *config.Storage) { s.SAS = config.Secret(testSAS) }), wantMode: config.AuthSAS, wantKind: KindSAS, wantAuto: true},
		{name: "auto: workload identity", cfg: wi, wantMode: config.AuthWorkloadIdentity, wantKind: KindToken, wantAuto: true},
		{name: "auto: token file without ids names them", cfg: config.Storage{TokenFile: "/t"}, wantErr: []string{"workloadidentity", "client id", "AZURE_CLIENT_ID", "tenant id", "AZURE_TENANT_ID"}},
		{name: "auto: spn secret", cfg: config.Storage{ClientID: clientID, TenantID: tenantID, ClientSecret: config.Secret(testSecret)}, wantMode: config.AuthSPN, wantKind: KindToken, wantAuto: true},
		{name: "auto: token file beats secret", cfg: with(wi, func(s *config.Storage) { s.ClientSecret = config.Secret(testSecret) }), wantMode: config.AuthWorkloadIdentity, wantKind: KindToken, wantAuto: true},
		{name: "auto: secret without tenant", cfg: config.Storage{ClientID: clientID, ClientSecret: config.Secret(testSecret)}, wantErr: []string{"spn", "tenant id"}},
		{name: "auto: certificate means spn", cfg: config.Storage{ClientID: clientID, TenantID: tenantID}, certFile: "/nonexistent/cert.pem", wantErr: []string{"client certificate", "/nonexistent/cert.pem"}},
		{name: "auto: nothing lists the choices", cfg: config.Storage{Account: "acct"}, wantErr: []string{"no credentials configured", "--auth-mode msi", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_STORAGE_ACCESS_KEY", "never chosen automatically"}},
		{name: "auto: client and tenant alone never mean msi", cfg: config.Storage{ClientID: clientID, TenantID: tenantID}, wantErr: []string{"no credentials configured"}},

		// Explicit modes, BlobFuse2 spellings included.
		{name: "Key (BlobFuse2 case)", cfg: config.Storage{AuthMode: "Key", Account: "acct", AccountKey: config.Secret(testKey)}, wantMode: config.AuthKey, wantKind: KindSharedKey},
		{name: "key without key", cfg: config.Storage{AuthMode: config.AuthKey, Account: "acct"}, wantErr: []string{"key", "AZURE_STORAGE_ACCESS_KEY"}},
		{name: "key without account", cfg: config.Storage{AuthMode: config.AuthKey, AccountKey: config.Secret(testKey)}, wantErr: []string{"account name", "--account"}},
		{name: "key not base64", cfg: config.Storage{AuthMode: config.AuthKey, Account: "acct", AccountKey: "not base64!!"}, wantErr: []string{"not valid base64"}},
		{name: "key account from endpoint", cfg: config.Storage{AuthMode: config.AuthKey, Endpoint: "https://127.0.0.1:10000/devstoreaccount1", AccountKey: config.Secret(testKey)}, wantMode: config.AuthKey, wantKind: KindSharedKey},
		{name: "sas without sas", cfg: config.Storage{AuthMode: config.AuthSAS}, wantErr: []string{"SAS token", "AZURE_STORAGE_SAS_TOKEN"}},
		{name: "sas without sig", cfg: config.Storage{AuthMode: config.AuthSAS, SAS: "sv=2022-11-02&sp=r"}, wantErr: []string{"signature"}},
		{name: "sas expired", cfg: config.Storage{AuthMode: config.AuthSAS, SAS: "se=2001-01-01T00:00:00Z&sig=abcd"}, wantErr: []string{"expired at 2001-01-01"}},
		{name: "sas as a whole URL", cfg: config.Storage{SAS: config.Secret("https://acct.blob.core.windows.net/c?" + testSAS)}, wantMode: config.AuthSAS, wantKind: KindSAS, wantAuto: true},
		{name: "workloadidentity missing everything", cfg: config.Storage{AuthMode: "workload-identity"}, wantErr: []string{"client id", "tenant id", "federated token file", "--token-file"}},
		{name: "workloadidentity custom authority http", cfg: with(wi, func(s *config.Storage) {
			s.AuthMode, s.AuthorityHost = config.AuthWorkloadIdentity, "http://login.example"
		}), wantErr: []string{"must be https"}},
		{name: "workloadidentity bare authority host", cfg: with(wi, func(s *config.Storage) { s.AuthorityHost = "login.microsoftonline.us" }), wantMode: config.AuthWorkloadIdentity, wantKind: KindToken, wantAuto: true},
		{name: "spn without credential", cfg: config.Storage{AuthMode: config.AuthSPN, ClientID: clientID, TenantID: tenantID}, wantErr: []string{"client secret", "certificate"}},
		{name: "spn bad tenant", cfg: config.Storage{AuthMode: config.AuthSPN, ClientID: clientID, TenantID: "bad tenant!", ClientSecret: config.Secret(testSecret)}, wantErr: []string{"tenant"}},
		{name: "msi system-assigned", cfg: config.Storage{AuthMode: config.AuthMSI}, wantMode: config.AuthMSI, wantKind: KindToken},
		{name: "msi client id", cfg: config.Storage{AuthMode: config.AuthMSI, ClientID: clientID}, wantMode: config.AuthMSI, wantKind: KindToken},
		{name: "msi resource id", cfg: config.Storage{AuthMode: config.AuthMSI, ManagedIdentityResourceID: "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"}, wantMode: config.AuthMSI, wantKind: KindToken},
		{name: "msi both ids", cfg: config.Storage{AuthMode: config.AuthMSI, ClientID: clientID, ManagedIdentityResourceID: "/x/y"}, wantErr: []string{"not both"}},
		{name: "azcli", cfg: config.Storage{AuthMode: config.AuthAzCLI}, wantMode: config.AuthAzCLI, wantKind: KindToken},
		{name: "anonymous", cfg: config.Storage{AuthMode: "public"}, wantMode: config.AuthAnonymous, wantKind: KindAnonymous},
		{name: "unknown mode", cfg: config.Storage{AuthMode: "kerberos"}, wantErr: []string{"kerberos", "workloadidentity"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := opts
			o.ClientCertificateFile = c.certFile
			cred, err := New(c.cfg, o)
			lc.err(err)
			if c.wantErr != nil {
				if err == nil {
					t.Fatalf("New succeeded with mode %v, want an error", cred.Mode())
				}
				if !errors.Is(err, config.ErrInvalid) {
					t.Errorf("error %v does not wrap config.ErrInvalid", err)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not mention %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			lc.text(cred.Describe())
			lc.text(fmt.Sprintf("%v %+v %#v", cred, cred, cred.Identity()))
			if cred.Mode() != c.wantMode || cred.Kind() != c.wantKind {
				t.Errorf("mode %v kind %v, want %v %v", cred.Mode(), cred.Kind(), c.wantMode, c.wantKind)
			}
			if got := strings.Contains(cred.Describe(), "chosen automatically"); got != c.wantAuto {
				t.Errorf("Describe %q: automatic=%v, want %v", cred.Describe(), got, c.wantAuto)
			}
			// Exactly one accessor is set, matching the kind.
			set := map[Kind]bool{
				KindToken:     cred.TokenCredential() != nil,
				KindSharedKey: cred.SharedKey() != nil,
				KindSAS:       cred.SAS() != "",
			}
			for k, ok := range set {
				if ok != (k == cred.Kind()) {
					t.Errorf("kind %v but accessor for %v set=%v", cred.Kind(), k, ok)
				}
			}
			// Every kind builds a container client; none needs the network.
			if _, err := cred.NewContainerClient("https://acct.blob.core.windows.net/c", nil); err != nil {
				t.Errorf("NewContainerClient: %v", lc.err(err))
			}
			// Only token kinds have something to verify; none here is called.
			if cred.Kind() != KindToken {
				if err := cred.Verify(context.Background()); err != nil {
					t.Errorf("Verify for %v: %v", cred.Kind(), err)
				}
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	opts := noNetworkEnv(t)
	for _, tc := range []struct {
		cfg        config.Storage
		want, not_ []string
	}{
		{config.Storage{ClientID: clientID, TenantID: tenantID, TokenFile: "/var/run/secrets/azure/tokens/azure-identity-token"},
			[]string{"auth: workload identity, client 0a1b…, tenant 72f9…, token file /var/run/secrets/azure/tokens/azure-identity-token", "chosen automatically: a federated token file is set"},
			[]string{clientID, tenantID}},
		{config.Storage{Account: "acct", AccountKey: config.Secret(testKey)}, []string{"auth: shared key, account acct"}, []string{testKey}},
		{config.Storage{Account: "acct", SAS: config.Secret(testSAS)}, []string{"auth: SAS, account acct, permissions rl, expires 2099-01-01T00:00:00Z"}, []string{"sig", "c2ln"}},
		{config.Storage{AuthMode: config.AuthMSI}, []string{"auth: managed identity (system-assigned)"}, nil},
		{config.Storage{AuthMode: config.AuthAnonymous}, []string{"auth: anonymous (public container)"}, nil},
		{config.Storage{ClientID: clientID, TenantID: tenantID, ClientSecret: config.Secret(testSecret)}, []string{"service principal (client secret), client 0a1b…"}, []string{testSecret}},
	} {
		c, err := New(tc.cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		d := c.Describe()
		for _, w := range tc.want {
			if !strings.Contains(d, w) {
				t.Errorf("Describe = %q, want %q", d, w)
			}
		}
		for _, n := range tc.not_ {
			if strings.Contains(d, n) {
				t.Errorf("Describe = %q contains %q", d, n)
			}
		}
	}
}

func TestAccountFromEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"https://mydata.blob.core.windows.net/":       "mydata",
		"https://mydata.blob.core.chinacloudapi.cn":   "mydata",
		"http://127.0.0.1:10000/devstoreaccount1":     "devstoreaccount1",
		"https://localhost:10000/devstoreaccount1/x":  "devstoreaccount1",
		"https://[::1]:10000/devstoreaccount1":        "devstoreaccount1",
		"https://storage.example.com/devstoreaccount": "",
		"":          "",
		"not a url": "",
	} {
		if got := accountFromEndpoint(in); got != want {
			t.Errorf("accountFromEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthorityHost(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		disable  bool
	}{
		{"", "https://login.microsoftonline.com/", false},
		{"login.microsoftonline.us", "https://login.microsoftonline.us/", false},
		{"https://login.chinacloudapi.cn/", "https://login.chinacloudapi.cn/", false},
		{"https://127.0.0.1:8443", "https://127.0.0.1:8443/", true},
		{"https://adfs.contoso.example/adfs", "https://adfs.contoso.example/adfs/", true},
	} {
		c, disable, err := authority(tc.in)
		if err != nil || c.ActiveDirectoryAuthorityHost != tc.want || disable != tc.disable {
			t.Errorf("authority(%q) = %q, %v, %v; want %q, %v", tc.in, c.ActiveDirectoryAuthorityHost, disable, err, tc.want, tc.disable)
		}
	}
}

func TestScrub(t *testing.T) {
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	for _, tc := range []struct{ in, secret, want string }{
		{"token " + jwt + " rejected", "", "token [REDACTED] rejected"},
		{"POST /token client_secret=abc123&client_id=x", "", "POST /token client_secret=[REDACTED]&client_id=x"},
		{"GET https://a.blob.core.windows.net/c?sv=1&sig=AbC%2F%3D&sp=r", "", "GET https://a.blob.core.windows.net/c?sv=1&sig=[REDACTED]&sp=r"},
		{"the secret is hunter22!", "hunter22!", "the secret is [REDACTED]"},
		{"short xyz stays", "xyz", "short xyz stays"},
	} {
		if got := scrub(tc.in, tc.secret); got != tc.want {
			t.Errorf("scrub(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The SAS container client carries the signature in its URL; building it
// must not put the signature anywhere else.
func TestSASContainerClientURL(t *testing.T) {
	opts := noNetworkEnv(t)
	c, err := New(config.Storage{SAS: config.Secret("?" + testSAS)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.NewContainerClient("https://acct.blob.core.windows.net/c", &container.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cl.URL(), "sig=") || strings.Contains(cl.URL(), "??") {
		t.Errorf("container URL %q does not carry the SAS once", cl.URL())
	}
	if strings.HasPrefix(c.SAS().Reveal(), "?") {
		t.Error("SAS kept its leading '?'")
	}
	if fmt.Sprint(c.SAS()) != "[REDACTED]" {
		t.Error("SAS prints")
	}
}
