// Package entratest is a loopback HTTPS stand-in for Microsoft Entra ID's
// token endpoint and for the App Service style managed identity endpoint
// (IDENTITY_ENDPOINT / IDENTITY_HEADER), for tests of blobfs's auth and
// for end-to-end tests against Azurite started with `--oauth basic`.
//
// It serves, on one self-signed TLS server:
//
//	GET  /{tenant}/v2.0/.well-known/openid-configuration   OIDC discovery (what MSAL reads first)
//	POST /{tenant}/oauth2/v2.0/token                       client_credentials with client_assertion
//	                                                       (federated token or certificate-signed JWT)
//	                                                       or client_secret
//	GET  /msi/token                                        managed identity, api-version 2019-08-01
//
// Access tokens are JWT-shaped, signed HS256 with a key nobody checks:
// Azurite's basic OAuth mode reads iss (https://sts.windows.net/TENANT/),
// aud (https://storage.azure.com), nbf and exp, not the signature.
// Tests decide which credential is accepted (and rotate it), revoke and
// restore clients, set the token lifetime, and count requests.
//
// Credentials must reach this server through a transport that only dials
// loopback: Client returns one. Nothing here ever talks to 169.254.169.254.
package entratest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/blobfs/blobfs/internal/testenv"
)

// DefaultLifetime is how long issued tokens live unless Options say
// otherwise: short, so tests see several refreshes.
const DefaultLifetime = 60 * time.Second

// AssertionType is the client_assertion_type of a JWT client assertion.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// StorageAudience is the audience of storage tokens (scope
// https://storage.azure.com/.default).
const StorageAudience = "https://storage.azure.com"

// Options configure a Server.
type Options struct {
	// Lifetime of issued tokens; zero means DefaultLifetime.
	Lifetime time.Duration
	// Now is the clock for iat/nbf/exp and managed identity expires_on;
	// nil means time.Now.
	Now func() time.Time
	// LeakyErrors makes rejections echo the presented assertion or secret
	// in their error description, as a careless endpoint might. Tests use
	// it to prove blobfs scrubs what it is sent back.
	LeakyErrors bool
}

// Stats counts one client's token requests.
type Stats struct {
	Issued   int
	Rejected int
	// LastAssertion is the last client_assertion presented (accepted or
	// not), so tests can check which file content was read.
	LastAssertion string
}

// ManagedIdentity is an identity the managed identity endpoint serves.
type ManagedIdentity struct {
	TenantID   string
	ClientID   string
	ResourceID string
	// SystemAssigned makes it the identity served when the request names
	// none.
	SystemAssigned bool
}

type app struct {
	tenant    string
	assertion string
	secret    string
	cert      *x509.Certificate
	revoked   bool
}

// Server is the stand-in. Its methods are safe for concurrent use.
type Server struct {
	srv      *httptest.Server
	key      []byte
	now      func() time.Time
	leaky    bool
	idHeader string

	mu sync.Mutex
	// All GUARDED_BY(mu).
	lifetime   time.Duration
	apps       map[string]*app
	identities []ManagedIdentity
	revokedMI  map[string]bool
	stats      map[string]*Stats
	issued     []string
	requests   int
}

// New starts a Server on a loopback port; t.Cleanup stops it.
func New(t testing.TB, o Options) *Server {
	t.Helper()
	s := &Server{
		key:       randomBytes(32),
		now:       o.Now,
		leaky:     o.LeakyErrors,
		idHeader:  hex.EncodeToString(randomBytes(16)),
		lifetime:  o.Lifetime,
		apps:      map[string]*app{},
		revokedMI: map[string]bool{},
		stats:     map[string]*Stats{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.lifetime <= 0 {
		s.lifetime = DefaultLifetime
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", s.serveDiscovery)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.serveToken)
	mux.HandleFunc("GET /msi/token", s.serveManagedIdentity)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.count()
		// MSAL's instance discovery lands here when a caller forgot
		// DisableInstanceDiscovery: say so plainly.
		writeJSON(w, http.StatusNotFound, map[string]any{
			"error": "not_found", "error_description": "entratest: no such endpoint " + r.Method + " " + r.URL.Path +
				" (instance discovery must be disabled for a custom authority host)",
		})
	})
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the server's base URL, https://127.0.0.1:PORT.
func (s *Server) URL() string { return s.srv.URL }

// AuthorityHost is the value for AZURE_AUTHORITY_HOST / --authority-host.
func (s *Server) AuthorityHost() string { return s.srv.URL + "/" }

// TokenEndpoint is the tenant's token URL (the audience of certificate
// assertions).
func (s *Server) TokenEndpoint(tenantID string) string {
	return s.srv.URL + "/" + tenantID + "/oauth2/v2.0/token"
}

// ManagedIdentityEndpoint is the value for IDENTITY_ENDPOINT.
func (s *Server) ManagedIdentityEndpoint() string { return s.srv.URL + "/msi/token" }

// ManagedIdentityHeader is the value for IDENTITY_HEADER.
func (s *Server) ManagedIdentityHeader() string { return s.idHeader }

// SetManagedIdentityEnv points azidentity's managed identity detection at
// this server (App Service style) for the rest of the test, and clears the
// variables that would select another source. With IDENTITY_ENDPOINT set,
// azidentity never uses the instance metadata endpoint.
func (s *Server) SetManagedIdentityEnv(t testing.TB) {
	t.Helper()
	t.Setenv("IDENTITY_ENDPOINT", s.ManagedIdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", s.idHeader)
	for _, v := range []string{"IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"} {
		t.Setenv(v, "")
	}
}

// Certificate is the server's self-signed certificate (its own CA).
func (s *Server) Certificate() *x509.Certificate { return s.srv.Certificate() }

// CertPool trusts the server.
func (s *Server) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.srv.Certificate())
	return p
}

// CACertPEM is the server's certificate in PEM, for processes that read a
// CA file (SSL_CERT_FILE).
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// Transport dials loopback only and trusts the server (and nothing else,
// so add other CAs to its RootCAs when it must also reach, say, Azurite).
func (s *Server) Transport() *http.Transport {
	tr := testenv.LoopbackTransport()
	tr.TLSClientConfig = &tls.Config{RootCAs: s.CertPool(), MinVersion: tls.VersionTLS12}
	return tr
}

// Client is an *http.Client over Transport; it satisfies azcore's
// policy.Transporter, so it goes in auth.Options.Transport.
func (s *Server) Client() *http.Client { return &http.Client{Transport: s.Transport()} }

// SetLifetime changes the lifetime of tokens issued from now on.
func (s *Server) SetLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

func (s *Server) appLocked(tenantID, clientID string) *app {
	a := s.apps[clientID]
	if a == nil {
		a = &app{}
		s.apps[clientID] = a
	}
	a.tenant = tenantID
	return a
}

// SetAssertion registers clientID in tenantID with a federated credential
// that accepts exactly assertion. Calling it again rotates: from then on
// only the new assertion is accepted.
func (s *Server) SetAssertion(tenantID, clientID, assertion string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appLocked(tenantID, clientID).assertion = assertion
}

// SetSecret registers clientID in tenantID with a client secret.
func (s *Server) SetSecret(tenantID, clientID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appLocked(tenantID, clientID).secret = secret
}

// SetCertificate registers clientID in tenantID with a certificate
// credential: assertions must be JWTs signed by its key (PS256 or RS256),
// issued by and about clientID, for this tenant's token endpoint.
func (s *Server) SetCertificate(tenantID, clientID string, cert *x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appLocked(tenantID, clientID).cert = cert
}

// AddManagedIdentity makes the managed identity endpoint serve id.
func (s *Server) AddManagedIdentity(id ManagedIdentity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.identities = append(s.identities, id)
}

// Revoke makes every token request for clientID (an app or a managed
// identity) fail until Restore, as a disabled app or a deleted federated
// credential would.
func (s *Server) Revoke(clientID string) { s.setRevoked(clientID, true) }

// Restore undoes Revoke.
func (s *Server) Restore(clientID string) { s.setRevoked(clientID, false) }

func (s *Server) setRevoked(clientID string, v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[clientID]; a != nil {
		a.revoked = v
	}
	s.revokedMI[clientID] = v
}

// Stats returns clientID's request counts.
func (s *Server) Stats(clientID string) Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stats[clientID]; st != nil {
		return *st
	}
	return Stats{}
}

// Requests counts every request the server received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Tokens returns every access token issued so far, for tests that scan
// logs and errors for leaks.
func (s *Server) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Claims checks that token was issued by this server and returns its
// claims.
func (s *Server) Claims(token string) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(s.now))
	return claims, err
}

func (s *Server) count() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
}

func (s *Server) statsLocked(clientID string) *Stats {
	st := s.stats[clientID]
	if st == nil {
		st = &Stats{}
		s.stats[clientID] = st
	}
	return st
}

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	s.count()
	tenant := r.PathValue("tenant")
	base := s.srv.URL + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"issuer":                                base + "/v2.0",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt"},
		"response_types_supported":              []string{"code", "id_token", "token"},
		"tenant_region_scope":                   "NA",
	})
}

// entraError writes Entra's error shape: the AADSTS sentence first, then
// trace lines, as the real service does.
func entraError(w http.ResponseWriter, status int, code string, aadsts int, msg string) {
	writeJSON(w, status, map[string]any{
		"error": code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
			aadsts, msg, hex.EncodeToString(randomBytes(8)), hex.EncodeToString(randomBytes(8)), time.Now().UTC().Format(time.RFC3339)),
		"error_codes": []int{aadsts},
	})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	s.count()
	tenant := r.PathValue("tenant")
	if err := r.ParseForm(); err != nil {
		entraError(w, http.StatusBadRequest, "invalid_request", 900144, "malformed form")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" {
		entraError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, "only client_credentials is supported by entratest")
		return
	}
	clientID := f.Get("client_id")
	audience := ""
	for _, sc := range strings.Fields(f.Get("scope")) {
		if strings.HasSuffix(sc, "/.default") {
			audience = strings.TrimSuffix(sc, "/.default")
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.statsLocked(clientID)
	reject := func(status int, code string, aadsts int, msg string) {
		st.Rejected++
		entraError(w, status, code, aadsts, msg)
	}
	if audience == "" {
		reject(http.StatusBadRequest, "invalid_scope", 1002012, "the scope must be RESOURCE/.default for client credentials")
		return
	}
	a := s.apps[clientID]
	if a == nil || a.tenant != tenant {
		reject(http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", clientID, tenant))
		return
	}
	if a.revoked {
		reject(http.StatusBadRequest, "unauthorized_client", 7000112, fmt.Sprintf("Application '%s' is disabled.", clientID))
		return
	}
	assertion, secret := f.Get("client_assertion"), f.Get("client_secret")
	switch {
	case assertion != "":
		st.LastAssertion = assertion
		if f.Get("client_assertion_type") != AssertionType {
			reject(http.StatusBadRequest, "invalid_request", 50027, "client_assertion_type must be "+AssertionType)
			return
		}
		if a.cert != nil {
			if err := s.checkCertAssertion(assertion, clientID, tenant, a.cert); err != nil {
				reject(http.StatusUnauthorized, "invalid_client", 700027, "Client assertion failed signature validation: "+err.Error()+s.echo(assertion))
				return
			}
		} else if a.assertion == "" || assertion != a.assertion {
			reject(http.StatusBadRequest, "invalid_client", 700213,
				"No matching federated identity record found for presented assertion."+s.echo(assertion))
			return
		}
	case secret != "":
		if a.secret == "" || secret != a.secret {
			reject(http.StatusUnauthorized, "invalid_client", 7000215, "Invalid client secret provided."+s.echo(secret))
			return
		}
	default:
		reject(http.StatusBadRequest, "invalid_request", 7000218,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	tok, exp := s.issueLocked(tenant, clientID, audience, "")
	st.Issued++
	// Whole seconds, rounded down from the exp claim (itself whole
	// seconds), so a client computing now+expires_in never believes a
	// token lives longer than the resource server (Azurite) does.
	life := int(exp.Sub(s.now()) / time.Second)
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": tok,
	})
}

// echo is what a leaky endpoint adds to an error description.
func (s *Server) echo(credential string) string {
	if !s.leaky {
		return ""
	}
	return " Presented credential: " + credential
}

func (s *Server) checkCertAssertion(assertion, clientID, tenant string, cert *x509.Certificate) error {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(assertion, claims, func(*jwt.Token) (any, error) { return cert.PublicKey, nil },
		jwt.WithValidMethods([]string{"PS256", "RS256"}), jwt.WithAudience(s.TokenEndpoint(tenant)),
		jwt.WithIssuer(clientID), jwt.WithSubject(clientID), jwt.WithExpirationRequired())
	return err
}

// issueLocked mints an access token. REQUIRES(s.mu)
func (s *Server) issueLocked(tenant, clientID, audience, resourceID string) (string, time.Time) {
	now := s.now()
	exp := now.Add(s.lifetime).Truncate(time.Second) // what the exp claim can say
	claims := jwt.MapClaims{
		"iss":   "https://sts.windows.net/" + tenant + "/",
		"aud":   audience,
		"iat":   now.Unix(),
		"nbf":   now.Add(-5 * time.Minute).Unix(),
		"exp":   exp.Unix(),
		"appid": clientID,
		"azp":   clientID,
		"tid":   tenant,
		"oid":   "oid-" + clientID,
		"sub":   "oid-" + clientID,
		"idtyp": "app",
		"ver":   "1.0",
		"uti":   hex.EncodeToString(randomBytes(8)),
	}
	if resourceID != "" {
		claims["xms_mirid"] = resourceID
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.key)
	if err != nil {
		panic(err) // HS256 with a byte key cannot fail
	}
	s.issued = append(s.issued, tok)
	return tok, exp
}

func (s *Server) serveManagedIdentity(w http.ResponseWriter, r *http.Request) {
	s.count()
	q := r.URL.Query()
	msiError := func(status int, msg string) {
		writeJSON(w, status, map[string]any{"statusCode": status, "message": msg, "correlationId": hex.EncodeToString(randomBytes(8))})
	}
	if r.Header.Get("X-IDENTITY-HEADER") != s.idHeader {
		msiError(http.StatusUnauthorized, "missing or wrong X-IDENTITY-HEADER")
		return
	}
	if v := q.Get("api-version"); v != "2019-08-01" {
		msiError(http.StatusBadRequest, "unsupported api-version "+strconv.Quote(v))
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		msiError(http.StatusBadRequest, "resource is required")
		return
	}
	clientID, resID := q.Get("client_id"), q.Get("mi_res_id")
	if resID == "" {
		resID = q.Get("msi_res_id")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var found *ManagedIdentity
	for i := range s.identities {
		id := &s.identities[i]
		switch {
		case clientID != "" && strings.EqualFold(id.ClientID, clientID),
			resID != "" && strings.EqualFold(id.ResourceID, resID),
			clientID == "" && resID == "" && id.SystemAssigned:
			found = id
		}
		if found != nil {
			break
		}
	}
	key := clientID
	if found != nil {
		key = found.ClientID
	}
	st := s.statsLocked(key)
	if found == nil {
		st.Rejected++
		msiError(http.StatusBadRequest, "No managed identity found for specified ClientId/ResourceId/PrincipalId.")
		return
	}
	if s.revokedMI[found.ClientID] {
		st.Rejected++
		msiError(http.StatusBadRequest, "The managed identity is disabled.")
		return
	}
	tok, exp := s.issueLocked(found.TenantID, found.ClientID, strings.TrimSuffix(resource, "/"), found.ResourceID)
	st.Issued++
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    found.ClientID,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// FederatedToken returns a new JWT shaped like a Kubernetes projected
// service account token for workload identity (audience
// api://AzureADTokenExchange, subject system:serviceaccount:NS:SA). Each
// call returns a different token, as each kubelet rotation does. The stand-in
// only compares assertions, so the signature is meaningless.
func FederatedToken(subject string) string {
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": "https://oidc.entratest.invalid/",
		"sub": subject,
		"aud": []string{"api://AzureADTokenExchange"},
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"jti": hex.EncodeToString(randomBytes(16)),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(randomBytes(32))
	if err != nil {
		panic(err)
	}
	return tok
}

// NewClientCertificate returns a fresh self-signed RSA certificate for a
// service principal and a PEM file body holding it and its PKCS#8 private
// key, the form azidentity.ParseCertificates reads.
func NewClientCertificate(t testing.TB, commonName string) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(randomBytes(8)),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})...)
	return cert, data
}
