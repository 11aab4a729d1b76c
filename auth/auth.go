// Package auth turns a mount's storage settings (config.Storage) into the
// credential the Blob client uses: an Entra ID token credential (workload
// identity, a CSI per-pod token file, managed identity, service principal,
// Azure CLI) wrapped in blobfs's own caching token source, a shared key, a
// SAS, or nothing (anonymous access to a public container).
//
// The one entry point is New. It never touches the network; Verify fetches
// the first token when the caller wants a configuration error at mount time
// rather than at the first file operation.
//
// Secrets never leave this package in a printable form: errors and logs
// carry summaries scrubbed of tokens, assertions, client secrets, keys and
// SAS signatures, and the only file this package writes (WriteTokenFile) is
// created 0600.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobfs/blobfs/internal/config"
)

// StorageScope is the Entra ID scope of Azure Storage, the one the azblob
// client asks for by default.
const StorageScope = "https://storage.azure.com/.default"

// Kind says which of the four shapes a Credential has.
type Kind int

// The credential kinds. Exactly one of Credential's accessors is non-zero
// for each.
const (
	// KindToken: an Entra ID bearer token credential (TokenCredential).
	KindToken Kind = iota + 1
	// KindSharedKey: the account name and key (SharedKey).
	KindSharedKey
	// KindSAS: a shared access signature appended to every URL (SAS).
	KindSAS
	// KindAnonymous: no credential; only public containers work.
	KindAnonymous
)

func (k Kind) String() string {
	switch k {
	case KindToken:
		return "token"
	case KindSharedKey:
		return "shared key"
	case KindSAS:
		return "sas"
	case KindAnonymous:
		return "anonymous"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Options carries what New needs besides the settings: wiring, not
// configuration.
type Options struct {
	// Transport sends token requests (Entra ID, the managed identity
	// endpoint). nil means azcore's default transport. An *http.Client
	// satisfies it; tests pass one built on testenv.LoopbackTransport that
	// trusts the stand-in's CA.
	Transport policy.Transporter
	// RefreshMargin is how long before a token expires blobfs fetches the
	// next one. Zero means a third of the token's lifetime, at most five
	// minutes (so a 60-second token is refreshed at about 40 s and a
	// one-hour token at 55 min). It is capped at half the lifetime so a
	// short token cannot cause a refresh on every request.
	RefreshMargin time.Duration
	// Logger receives refresh failures and recoveries. nil discards.
	Logger *slog.Logger
	// Registerer receives the token metrics (blobfs_auth_*). nil registers
	// nothing. One credential per registerer: wrap it with
	// prometheus.WrapRegistererWith to tell several apart.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now. Tests use a fake one.
	Now func() time.Time
	// ClientCertificateFile is a PEM (or password-less PKCS#12) file with
	// the certificate and private key of a service principal (auth mode
	// spn). It lives here until config.Storage grows a field for it.
	ClientCertificateFile string
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Identity names who a credential authenticates as. It holds no secret and
// may be logged whole; String abbreviates the ids for the mount's log line.
type Identity struct {
	// Mode is the auth mode in effect (never AuthAuto).
	Mode config.AuthMode
	// Method says it in words: "workload identity", "managed identity
	// (user-assigned)", "service principal (certificate)", ...
	Method string
	// Auto is set when Mode was chosen automatically; it says why.
	Auto       string
	ClientID   string
	TenantID   string
	ResourceID string
	TokenFile  string
	CertFile   string
	Account    string
	// Detail is extra, non-secret description (a SAS's permissions and
	// expiry).
	Detail string
}

// String is the short form used by Describe: ids abbreviated.
func (id Identity) String() string { return id.format(abbrev, true) }

// full names the identity with complete ids, for errors and failure logs
// where an operator has to find the exact app registration.
func (id Identity) full() string { return id.format(func(s string) string { return s }, false) }

func (id Identity) format(short func(string) string, withAuto bool) string {
	var b strings.Builder
	b.WriteString(id.Method)
	add := func(label, v string) {
		if v != "" {
			fmt.Fprintf(&b, ", %s %s", label, v)
		}
	}
	add("client", short(id.ClientID))
	add("tenant", short(id.TenantID))
	if id.ResourceID != "" {
		// The identity's name, not an id: nothing to abbreviate.
		add("resource", resourceName(id.ResourceID))
	}
	add("account", id.Account)
	add("token file", id.TokenFile)
	add("certificate", id.CertFile)
	if id.Detail != "" {
		b.WriteString(", " + id.Detail)
	}
	if withAuto && id.Auto != "" {
		fmt.Fprintf(&b, " (chosen automatically: %s)", id.Auto)
	}
	return b.String()
}

// LogValue logs the identity as attributes, ids in full.
func (id Identity) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("mode", string(id.Mode))}
	for _, a := range []struct{ k, v string }{
		{"client_id", id.ClientID}, {"tenant_id", id.TenantID}, {"resource_id", id.ResourceID},
		{"account", id.Account}, {"token_file", id.TokenFile}, {"cert_file", id.CertFile},
	} {
		if a.v != "" {
			attrs = append(attrs, slog.String(a.k, a.v))
		}
	}
	return slog.GroupValue(attrs...)
}

// abbrev shortens an id to its first four characters: enough to tell two
// identities apart in a log, not enough to paste into a portal by mistake.
func abbrev(s string) string {
	if len(s) <= 8 {
		return s
	}
	return s[:4] + "…"
}

// resourceName keeps the last segment of an ARM resource id (the
// identity's name); the subscription and group add nothing to a log line.
func resourceName(id string) string {
	id = strings.TrimRight(id, "/")
	if i := strings.LastIndex(id, "/"); i >= 0 && i < len(id)-1 {
		return "…/" + id[i+1:]
	}
	return id
}

// Credential is the result of New: one of four kinds, each with its own
// accessor. It is immutable and safe for concurrent use.
type Credential struct {
	kind      Kind
	id        Identity
	token     *TokenSource
	sharedKey *azblob.SharedKeyCredential
	sas       config.Secret
}

// String, GoString and LogValue print Describe's text. They exist because
// fmt prints unexported fields raw, bypassing config.Secret's redaction:
// without them, logging a Credential with %+v would print a SAS. (Value
// receivers throughout, so a copy is covered too; a Credential is
// immutable and cheap to copy.)
func (c Credential) String() string { return c.Describe() }

// GoString implements fmt.GoStringer; see String.
func (c Credential) GoString() string { return "auth.Credential{" + c.Describe() + "}" }

// LogValue implements slog.LogValuer; see String.
func (c Credential) LogValue() slog.Value { return slog.StringValue(c.Describe()) }

// Kind says which accessor carries the credential.
func (c Credential) Kind() Kind { return c.kind }

// Mode is the auth mode in effect (explicit or chosen automatically).
func (c Credential) Mode() config.AuthMode { return c.id.Mode }

// Identity describes who the credential authenticates as.
func (c Credential) Identity() Identity { return c.id }

// TokenCredential returns blobfs's caching token source for KindToken, nil
// otherwise. Hand it to container.NewClient (or any azure-sdk client).
func (c Credential) TokenCredential() azcore.TokenCredential {
	if c.token == nil {
		return nil
	}
	return c.token
}

// TokenSource is TokenCredential with its concrete type; nil unless
// KindToken.
func (c Credential) TokenSource() *TokenSource { return c.token }

// SharedKey returns the account's shared key credential for KindSharedKey,
// nil otherwise.
func (c Credential) SharedKey() *azblob.SharedKeyCredential { return c.sharedKey }

// SAS returns the SAS query string (no leading '?') for KindSAS, empty
// otherwise. Append it to the container URL at the point of use only.
func (c Credential) SAS() config.Secret { return c.sas }

// Describe is the one line to log at mount: the mode and who, ids
// abbreviated, never a secret. For example
// "auth: workload identity, client 1234…, tenant 72f9…, token file /var/run/secrets/azure/tokens/azure-identity-token".
func (c Credential) Describe() string { return "auth: " + c.id.String() }

// Verify fetches a storage token now (KindToken) so that a wrong identity
// fails the mount with a clear error instead of the first file operation.
// The token is cached and reused. Other kinds have nothing to verify
// without a storage request.
func (c Credential) Verify(ctx context.Context) error {
	if c.token == nil {
		return nil
	}
	// The same options azcore's bearer token policy uses, so the cached
	// token is the one the first storage request gets.
	_, err := c.token.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{StorageScope}, EnableCAE: true})
	return err
}

// NewContainerClient builds an azblob container client for containerURL
// (https://ACCOUNT.blob.core.windows.net/CONTAINER) that authenticates with
// c, whatever its kind. A token credential needs an https URL unless
// o.InsecureAllowCredentialWithHTTP is set (Azurite over plain http).
func (c Credential) NewContainerClient(containerURL string, o *container.ClientOptions) (*container.Client, error) {
	switch c.kind {
	case KindToken:
		return container.NewClient(containerURL, c.token, o)
	case KindSharedKey:
		return container.NewClientWithSharedKeyCredential(containerURL, c.sharedKey, o)
	case KindSAS:
		u, err := url.Parse(containerURL)
		if err != nil {
			return nil, fmt.Errorf("auth: container URL: %w", err)
		}
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += c.sas.Reveal()
		cl, err := container.NewClientWithNoCredential(u.String(), o)
		if err != nil {
			// The URL now holds the signature; never let it into an error.
			return nil, errors.New("auth: cannot build a SAS container client: " + scrub(err.Error(), c.sas.Reveal()))
		}
		return cl, nil
	case KindAnonymous:
		return container.NewClientWithNoCredential(containerURL, o)
	}
	return nil, fmt.Errorf("auth: credential kind %v", c.kind)
}

// New turns the storage settings into a credential. The auth mode is
// cfg.AuthMode, or, when that is unset, chosen from the settings present
// (see ChooseMode). Missing or malformed settings give an error wrapping
// config.ErrInvalid that names every setting to fix. New does no network
// I/O; tokens are fetched on first use (or by Verify).
func New(cfg config.Storage, opts Options) (*Credential, error) {
	mode, why, err := ChooseMode(cfg, opts.ClientCertificateFile)
	if err != nil {
		return nil, err
	}
	if err := validate(mode, cfg, opts.ClientCertificateFile); err != nil {
		return nil, err
	}
	switch mode {
	case config.AuthKey:
		return newSharedKey(cfg, why)
	case config.AuthSAS:
		return newSAS(cfg, why, opts.now())
	case config.AuthAnonymous:
		return &Credential{kind: KindAnonymous, id: Identity{Mode: mode, Method: "anonymous (public container)", Auto: why}}, nil
	}
	tc, id, secrets, err := newTokenCredential(mode, cfg, opts)
	if err != nil {
		return nil, err
	}
	id.Auto = why
	ts, err := newTokenSource(tc, id, opts, secrets)
	if err != nil {
		return nil, err
	}
	return &Credential{kind: KindToken, id: id, token: ts}, nil
}

func newSharedKey(cfg config.Storage, why string) (*Credential, error) {
	account := cfg.Account
	if account == "" {
		account = accountFromEndpoint(cfg.Endpoint)
	}
	if account == "" {
		return nil, fmt.Errorf("auth mode key needs the storage account name: set --account (AZURE_STORAGE_ACCOUNT, azstorage.account-name): %w", config.ErrInvalid)
	}
	sk, err := azblob.NewSharedKeyCredential(account, cfg.AccountKey.Reveal())
	if err != nil {
		// azblob's message names only the decoding problem, but the key
		// must not reach an error even by accident.
		return nil, fmt.Errorf("account key for %s is not valid base64 (AZURE_STORAGE_ACCESS_KEY, azstorage.account-key): %w", account, config.ErrInvalid)
	}
	return &Credential{kind: KindSharedKey, sharedKey: sk, id: Identity{Mode: config.AuthKey, Method: "shared key", Account: account, Auto: why}}, nil
}

func newSAS(cfg config.Storage, why string, now time.Time) (*Credential, error) {
	raw := strings.TrimSpace(cfg.SAS.Reveal())
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		// A whole SAS URL was pasted; keep the query.
		raw = raw[i+1:]
	}
	q, err := url.ParseQuery(raw)
	if err != nil || q.Get("sig") == "" {
		return nil, fmt.Errorf("SAS token is not a query string with a signature (sv=...&sig=...) (AZURE_STORAGE_SAS_TOKEN, azstorage.sas): %w", config.ErrInvalid)
	}
	var detail []string
	if sp := q.Get("sp"); sp != "" {
		detail = append(detail, "permissions "+sp)
	}
	if se := q.Get("se"); se != "" {
		if t, err := parseSASTime(se); err == nil {
			if !t.After(now) {
				return nil, fmt.Errorf("SAS token expired at %s (AZURE_STORAGE_SAS_TOKEN, azstorage.sas): %w", t.UTC().Format(time.RFC3339), config.ErrInvalid)
			}
			detail = append(detail, "expires "+t.UTC().Format(time.RFC3339))
		}
	}
	id := Identity{Mode: config.AuthSAS, Method: "SAS", Account: cfg.Account, Detail: strings.Join(detail, ", "), Auto: why}
	return &Credential{kind: KindSAS, sas: config.Secret(raw), id: id}, nil
}

// parseSASTime accepts the ISO 8601 forms the service does.
func parseSASTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unrecognized SAS time %q", s)
}

// accountFromEndpoint finds the account name in a blob endpoint:
// https://ACCOUNT.blob.core.windows.net/ or, for emulators addressed by IP
// or localhost, http://127.0.0.1:10000/ACCOUNT.
func accountFromEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return ""
	}
	host := u.Hostname()
	if first, rest, ok := strings.Cut(host, "."); ok && strings.HasPrefix(rest, "blob.") {
		return first
	}
	if host == "localhost" || net.ParseIP(host) != nil {
		seg, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		return seg
	}
	return ""
}
