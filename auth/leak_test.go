package auth

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blobfs/blobfs/auth/entratest"
	"github.com/blobfs/blobfs/internal/config"
)

// Every failure path, against a stand-in that echoes the credential it
// was sent in its error descriptions: no token, assertion or secret may
// appear in any error string or log line (debug included). Every other
// test in this package runs the same check on what it saw.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	lc := newLeakCheck(t)
	srv := standIn(t, lc, entratest.Options{LeakyErrors: true})
	srv.SetManagedIdentityEnv(t)
	lc.secret(srv.ManagedIdentityHeader())
	ctx := context.Background()
	o := optsFor(srv, lc)
	dir := t.TempDir()

	// Workload identity presenting an assertion the tenant does not accept.
	tokenFile := filepath.Join(dir, "wi-token")
	srv.SetAssertion(tenantID, clientID, entratest.FederatedToken("system:serviceaccount:other:sa"))
	writeFederatedToken(t, lc, tokenFile)
	wi := mustNew(t, lc, config.Storage{ClientID: clientID, TenantID: tenantID, TokenFile: tokenFile, AuthorityHost: srv.AuthorityHost()}, o)
	if err := lc.err(wi.Verify(ctx)); err == nil || !strings.Contains(err.Error(), "AADSTS700213") || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("rejected assertion: err = %v, want AADSTS700213 with the echoed assertion redacted", err)
	}

	// The right assertion: tokens issued and cached, debug lines logged.
	good := writeFederatedToken(t, lc, tokenFile)
	srv.SetAssertion(tenantID, clientID, good)
	wi2 := mustNew(t, lc, config.Storage{ClientID: clientID, TenantID: tenantID, TokenFile: tokenFile, AuthorityHost: srv.AuthorityHost()}, o)
	if err := lc.err(wi2.Verify(ctx)); err != nil {
		t.Fatal(err)
	}

	// A wrong client secret, echoed back.
	secret, wrong := "correct-horse-battery-staple-0", "wrong-horse-battery-staple-000"
	lc.secret(secret, wrong)
	srv.SetSecret(tenantID, "spn-client", secret)
	spn := mustNew(t, lc, config.Storage{AuthMode: config.AuthSPN, ClientID: "spn-client", TenantID: tenantID, ClientSecret: config.Secret(wrong), AuthorityHost: srv.AuthorityHost()}, o)
	if err := lc.err(spn.Verify(ctx)); err == nil {
		t.Error("wrong secret accepted")
	}
	// An unknown managed identity.
	msi := mustNew(t, lc, config.Storage{AuthMode: config.AuthMSI, ClientID: "no-such-identity"}, o)
	if err := lc.err(msi.Verify(ctx)); err == nil {
		t.Error("unknown managed identity accepted")
	}
	// Shared key and SAS credentials printed every way a caller might.
	key := mustNew(t, lc, config.Storage{Account: "acct", AccountKey: config.Secret(testKey)}, o)
	sas := mustNew(t, lc, config.Storage{SAS: config.Secret(testSAS)}, o)
	lc.secret(testKey, testSAS, "c2lnbmF0dXJlLXNlY3JldC12YWx1ZQ")
	lc.logger().Info("credentials", "key", key, "sas", sas, "sas_value", sas.SAS(), "wi", wi2, "identity", wi2.Identity())

	if len(srv.Tokens()) == 0 {
		t.Fatal("no token issued: the scan would prove little")
	}
	// The check itself must be able to fail: a planted leak is found.
	probe := newLeakCheckNoCleanup(lc.t)
	probe.secret(good)
	probe.text("oops " + good)
	if len(probe.leaks()) == 0 {
		t.Fatal("the leak check does not detect a planted secret")
	}
}

func newLeakCheckNoCleanup(t *testing.T) *leakCheck { return &leakCheck{t: t, log: &logBuf{}} }
