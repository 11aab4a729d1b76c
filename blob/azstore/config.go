package azstore

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/blobfs/blobfs/blob"
)

// Defaults applied by Config for zero fields.
const (
	DefaultMaxRetries       = 3
	DefaultRetryDelay       = 400 * time.Millisecond
	DefaultMaxRetryDelay    = 10 * time.Second
	DefaultTryTimeout       = 2 * time.Minute
	DefaultRangeConcurrency = 8
)

// ChecksumRange is the largest range the service returns a transfer MD5
// for; verified reads are split into ranges of at most this size.
const ChecksumRange = 4 << 20

// Config describes one container of one storage account. The zero value of
// every field except ServiceURL, Container and Credential means its
// default.
type Config struct {
	// ServiceURL is the account's blob endpoint, e.g.
	// https://ACCOUNT.blob.core.windows.net/ or, for Azurite,
	// http://127.0.0.1:PORT/devstoreaccount1. It must not carry a query:
	// a SAS goes in Credential.
	ServiceURL string
	// Container is the container name (3-63 characters: lower-case
	// letters, digits and single hyphens).
	Container string
	// Credential authorizes requests. Required; use Anonymous() for
	// public containers.
	Credential Credential

	// Transport sends the HTTP requests; nil means the SDK's default
	// client. Tests pass an *http.Client over testenv.LoopbackTransport()
	// that trusts Azurite's certificate. An *http.Transport should allow
	// more idle connections per host than Go's default of 2, or parallel
	// range reads keep opening new connections.
	Transport policy.Transporter

	// MaxRetries is how often a request is retried after a 503/500/429,
	// a network error or a per-try timeout. Zero means
	// DefaultMaxRetries; negative means no retries.
	MaxRetries int
	// RetryDelay is the first retry's delay; later ones grow
	// exponentially (with jitter) up to MaxRetryDelay. A Retry-After
	// header from the service wins. Zero means the defaults.
	RetryDelay, MaxRetryDelay time.Duration
	// TryTimeout bounds one attempt, response body included, so a
	// stalled connection is retried instead of hanging a reader. Zero
	// means DefaultTryTimeout; raise it for very large single Puts over
	// slow links.
	TryTimeout time.Duration

	// DisableRangeChecksums turns off transfer MD5 verification of reads
	// (see ReadAt). Verification is on by default, which is why this
	// field is phrased negatively: a zero Config must be the safe one.
	DisableRangeChecksums bool
	// RangeConcurrency caps the concurrent GETs of one ReadAt that is
	// split into ChecksumRange pieces. Zero means DefaultRangeConcurrency.
	RangeConcurrency int

	// Logger receives warnings about retried transfers; nil means
	// slog.Default(). Nothing logged contains credentials.
	Logger *slog.Logger
}

// Validate reports whether the config can make a Store.
func (c Config) Validate() error {
	if err := c.validateAccount(); err != nil {
		return err
	}
	if err := ValidateContainerName(c.Container); err != nil {
		return err
	}
	return nil
}

func (c Config) validateAccount() error {
	u, err := url.Parse(c.ServiceURL)
	switch {
	case c.ServiceURL == "":
		return fmt.Errorf("azstore: ServiceURL is empty: %w", blob.ErrInvalid)
	case err != nil:
		return fmt.Errorf("azstore: ServiceURL: %w: %w", blob.ErrInvalid, err)
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return fmt.Errorf("azstore: ServiceURL %q is not an http(s) URL: %w", redactURL(u), blob.ErrInvalid)
	case u.RawQuery != "":
		return fmt.Errorf("azstore: ServiceURL must not carry a query (put a SAS in Credential): %w", blob.ErrInvalid)
	case c.MaxRetries > 100:
		return fmt.Errorf("azstore: MaxRetries %d is unreasonable: %w", c.MaxRetries, blob.ErrInvalid)
	case c.RetryDelay < 0 || c.MaxRetryDelay < 0 || c.TryTimeout < 0:
		return fmt.Errorf("azstore: negative retry delay or timeout: %w", blob.ErrInvalid)
	case c.RangeConcurrency < 0:
		return fmt.Errorf("azstore: negative RangeConcurrency: %w", blob.ErrInvalid)
	}
	if err := c.Credential.validate(); err != nil {
		return err
	}
	if c.Credential.kind == credToken && u.Scheme != "https" {
		// The SDK refuses to send bearer tokens in the clear.
		return fmt.Errorf("azstore: a token credential needs an https ServiceURL: %w", blob.ErrInvalid)
	}
	return nil
}

// ValidateContainerName checks the service's container naming rules.
func ValidateContainerName(name string) error {
	bad := len(name) < 3 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--")
	for _, r := range name {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("azstore: container name %q: want 3-63 lower-case letters, digits and single inner hyphens: %w", name, blob.ErrInvalid)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	} else if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = max(DefaultMaxRetryDelay, c.RetryDelay)
	}
	if c.TryTimeout == 0 {
		c.TryTimeout = DefaultTryTimeout
	}
	if c.RangeConcurrency == 0 {
		c.RangeConcurrency = DefaultRangeConcurrency
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// clientOptions are the SDK options shared by every client made from c
// (defaults applied).
func (c Config) clientOptions() azcore.ClientOptions {
	retries := int32(c.MaxRetries)
	if retries == 0 {
		retries = -1 // the SDK reads 0 as "default", negative as "none"
	}
	return azcore.ClientOptions{
		Transport: c.Transport,
		Retry: policy.RetryOptions{
			MaxRetries:    retries,
			RetryDelay:    c.RetryDelay,
			MaxRetryDelay: c.MaxRetryDelay,
			TryTimeout:    c.TryTimeout,
		},
		Telemetry: policy.TelemetryOptions{ApplicationID: "blobfs"},
	}
}

func (c Config) serviceURL() string {
	return strings.TrimSuffix(c.ServiceURL, "/")
}

// containerClient builds the SDK client for one container.
func (c Config) containerClient(name string) (*container.Client, error) {
	u := c.serviceURL() + "/" + name
	opts := &container.ClientOptions{ClientOptions: c.clientOptions()}
	var (
		cl  *container.Client
		err error
	)
	switch cr := c.Credential; cr.kind {
	case credToken:
		cl, err = container.NewClient(u, cr.token, opts)
	case credSharedKey:
		var key *container.SharedKeyCredential
		if key, err = container.NewSharedKeyCredential(cr.account, cr.key); err == nil {
			cl, err = container.NewClientWithSharedKeyCredential(u, key, opts)
		}
	case credSAS:
		cl, err = container.NewClientWithNoCredential(u+"?"+cr.sas, opts)
	case credAnonymous:
		cl, err = container.NewClientWithNoCredential(u, opts)
	default:
		err = errors.New("no credential")
	}
	if err != nil {
		// err may quote the key's decoding failure, never the key.
		return nil, fmt.Errorf("azstore: container client: %w: %w", blob.ErrInvalid, err)
	}
	return cl, nil
}

// serviceClient builds the SDK client for the account.
func (c Config) serviceClient() (*service.Client, error) {
	u := c.serviceURL() + "/"
	opts := &service.ClientOptions{ClientOptions: c.clientOptions()}
	var (
		cl  *service.Client
		err error
	)
	switch cr := c.Credential; cr.kind {
	case credToken:
		cl, err = service.NewClient(u, cr.token, opts)
	case credSharedKey:
		var key *service.SharedKeyCredential
		if key, err = service.NewSharedKeyCredential(cr.account, cr.key); err == nil {
			cl, err = service.NewClientWithSharedKeyCredential(u, key, opts)
		}
	case credSAS:
		cl, err = service.NewClientWithNoCredential(u+"?"+cr.sas, opts)
	case credAnonymous:
		cl, err = service.NewClientWithNoCredential(u, opts)
	default:
		err = errors.New("no credential")
	}
	if err != nil {
		return nil, fmt.Errorf("azstore: service client: %w: %w", blob.ErrInvalid, err)
	}
	return cl, nil
}

func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	r := *u
	r.RawQuery, r.User = "", nil
	return r.String()
}

type credKind int

const (
	credNone credKind = iota
	credToken
	credSharedKey
	credSAS
	credAnonymous
)

// Credential is how requests are authorized: exactly one of a token
// credential (workload identity, managed identity, …), an account key, a
// SAS, or none at all. The zero value is "not configured" and fails
// Validate, so forgetting a credential never silently means anonymous.
// Its String and LogValue name the kind only, never the secret.
type Credential struct {
	kind    credKind
	token   azcore.TokenCredential
	account string
	key     string
	sas     string
}

// TokenCredential authorizes with OAuth bearer tokens from tc (Entra ID).
func TokenCredential(tc azcore.TokenCredential) Credential {
	return Credential{kind: credToken, token: tc}
}

// SharedKey authorizes with the storage account's name and base64 key.
func SharedKey(account, key string) Credential {
	return Credential{kind: credSharedKey, account: account, key: key}
}

// SAS authorizes with a shared access signature: the query string, with or
// without a leading '?'.
func SAS(query string) Credential {
	return Credential{kind: credSAS, sas: strings.TrimPrefix(query, "?")}
}

// Anonymous sends requests without authorization (public containers).
func Anonymous() Credential { return Credential{kind: credAnonymous} }

// Kind names the credential's kind: "token", "shared-key", "sas",
// "anonymous" or "none".
func (c Credential) Kind() string {
	switch c.kind {
	case credToken:
		return "token"
	case credSharedKey:
		return "shared-key"
	case credSAS:
		return "sas"
	case credAnonymous:
		return "anonymous"
	}
	return "none"
}

// String implements fmt.Stringer without revealing secrets.
func (c Credential) String() string { return "azstore.Credential(" + c.Kind() + ")" }

// GoString implements fmt.GoStringer, so %#v hides secrets too.
func (c Credential) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without revealing secrets.
func (c Credential) LogValue() slog.Value { return slog.StringValue(c.Kind()) }

func (c Credential) validate() error {
	switch c.kind {
	case credToken:
		if c.token == nil {
			return fmt.Errorf("azstore: token credential is nil: %w", blob.ErrInvalid)
		}
	case credSharedKey:
		if c.account == "" || c.key == "" {
			return fmt.Errorf("azstore: shared key needs an account name and a key: %w", blob.ErrInvalid)
		}
	case credSAS:
		if _, err := url.ParseQuery(c.sas); err != nil || c.sas == "" {
			return fmt.Errorf("azstore: SAS is empty or not a query string: %w", blob.ErrInvalid)
		}
	case credAnonymous:
	default:
		return fmt.Errorf("azstore: no credential configured (use Anonymous() for public containers): %w", blob.ErrInvalid)
	}
	return nil
}
