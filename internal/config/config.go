// Package config is the one place `blobfs mount` settings come from:
// defaults, then BlobFuse2's environment variables, then a config file
// (BlobFuse2's config.yaml unchanged, or blobfs's own YAML), then flags the
// user set explicitly. Later sources win. Secrets (account keys, SAS tokens,
// client secrets) come only from the environment or a file — never from
// flags, which would show in `ps`.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// ErrInvalid marks a configuration the user must fix. Every validation
// error wraps it, so the CLI can exit with a usage status.
var ErrInvalid = errors.New("invalid configuration")

// Secret is a credential value. It never prints: fmt, slog and JSON all see
// "[REDACTED]"; only Reveal returns the value, at the point of use.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer without leaking the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// GoString keeps %#v from leaking the value.
func (s Secret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps encoders (JSON, YAML) from leaking the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// AuthMode selects how the mount authenticates to Blob storage.
type AuthMode string

// Auth modes. The names are BlobFuse2's `azstorage.mode` values, plus
// anonymous for public containers.
const (
	AuthAuto             AuthMode = ""
	AuthKey              AuthMode = "key"
	AuthSAS              AuthMode = "sas"
	AuthSPN              AuthMode = "spn"
	AuthMSI              AuthMode = "msi"
	AuthAzCLI            AuthMode = "azcli"
	AuthWorkloadIdentity AuthMode = "workloadidentity"
	AuthAnonymous        AuthMode = "anonymous"
)

// ParseAuthMode accepts BlobFuse2's spellings in any case
// (AZURE_STORAGE_AUTH_TYPE=Key, mode: msi, ...).
func ParseAuthMode(s string) (AuthMode, error) {
	switch m := AuthMode(strings.ToLower(strings.TrimSpace(s))); m {
	case AuthAuto, AuthKey, AuthSAS, AuthSPN, AuthMSI, AuthAzCLI, AuthWorkloadIdentity, AuthAnonymous:
		return m, nil
	case "workload-identity", "workload_identity", "wi":
		return AuthWorkloadIdentity, nil
	case "none", "public":
		return AuthAnonymous, nil
	}
	return "", fmt.Errorf("auth mode %q: want one of key, sas, spn, msi, azcli, workloadidentity, anonymous: %w", s, ErrInvalid)
}

// Storage says which container to mount and how to reach it.
type Storage struct {
	Account   string `yaml:"account"`
	Container string `yaml:"container"`
	// Endpoint is the blob service URL; empty means
	// https://<account>.blob.core.windows.net/.
	Endpoint string `yaml:"endpoint"`
	// Subdirectory mounts a prefix of the container instead of all of it.
	Subdirectory string   `yaml:"subdirectory"`
	AuthMode     AuthMode `yaml:"auth-mode"`

	AccountKey   Secret `yaml:"account-key"`
	SAS          Secret `yaml:"sas"`
	ClientSecret Secret `yaml:"client-secret"`
	// ClientID is the application (SPN), user-assigned managed identity
	// or workload identity client id.
	ClientID string `yaml:"client-id"`
	TenantID string `yaml:"tenant-id"`
	// ManagedIdentityResourceID selects a user-assigned identity by resource id.
	ManagedIdentityResourceID string `yaml:"msi-resource-id"`
	// TokenFile is a federated token (workload identity, CSI per-pod
	// token) re-read at every refresh.
	TokenFile string `yaml:"token-file"`
	// ClientCertificateFile is a service principal's PEM certificate and key.
	ClientCertificateFile string `yaml:"client-certificate-file"`
	AuthorityHost         string `yaml:"authority-host"`

	MaxRetries int `yaml:"max-retries"`
	// VerifyReads checks a transfer MD5 of every ranged read, which caps
	// each GET at 4 MiB (the service's limit for range MD5s). Off (the
	// default, as BlobFuse2's validate-md5), reads go out as 8 MiB ranges
	// and rely on TLS for integrity in transit; the node cache checksums
	// what it stores either way. Off because it was the largest single
	// cost of a cold scan: on Azurite it halved cold sequential reads
	// (199 vs 322 MB/s, 512 MiB), the MD5 being computed on both ends.
	VerifyReads bool `yaml:"verify-reads"`
}

// FS holds the POSIX view's settings.
type FS struct {
	ReadOnly   bool `yaml:"read-only"`
	AllowOther bool `yaml:"allow-other"`
	// UID and GID own every file; -1 means the mounting user.
	UID int64 `yaml:"uid"`
	GID int64 `yaml:"gid"`
	// Umask is applied to FilePerm/DirPerm-style defaults (0o022 → 0644/0755).
	Umask uint32 `yaml:"umask"`
	// AttrTTL and EntryTTL are the kernel's attribute and name caches;
	// NegativeTTL caches "no such file" and is short so that files created
	// on another node (Ray Train's storage marker, a new checkpoint) show
	// up quickly.
	AttrTTL     time.Duration `yaml:"attr-timeout"`
	EntryTTL    time.Duration `yaml:"entry-timeout"`
	NegativeTTL time.Duration `yaml:"negative-timeout"`
	// ListTTL is how long blobfs's own attribute/listing cache trusts what
	// it saw (BlobFuse2's attr_cache.timeout-sec).
	ListTTL  time.Duration `yaml:"list-timeout"`
	DirectIO bool          `yaml:"direct-io"`
	// IgnoreInterrupts (default true, as gcsfuse's): a read, lookup or
	// listing stops with EINTR only when its caller is being killed, not
	// on every signal it gets (the Go runtime signals its threads all the
	// time, and nothing retries stat(2) on EINTR).
	IgnoreInterrupts bool `yaml:"ignore-interrupts"`
	// NoSymlinks treats is_symlink blobs as regular files (BlobFuse2's
	// attr_cache.no-symlinks).
	NoSymlinks bool `yaml:"no-symlinks"`
	// UploadTimeout bounds one commit (fsync/close) or one background
	// block upload, retries included; past it the call fails with EIO
	// and the data stays local. Zero: no bound.
	UploadTimeout time.Duration `yaml:"upload-timeout"`
	// MaxRenameDirEntries caps a directory rename (one copy per blob);
	// beyond it rename fails with EXDEV (mv then copies). -1: no limit.
	MaxRenameDirEntries int `yaml:"max-rename-dir-entries"`
	// Passthrough: auto (read-only mounts), on or off. A file the node
	// cache holds whole is handed to the kernel at open (FUSE
	// passthrough, Linux 6.9+, root): its reads never reach the daemon.
	Passthrough string `yaml:"passthrough"`
}

// MaxFetchAtOpenMB is the largest file fetched whole at open: the largest
// an open waits for (cache.awaitWholeMax).
const MaxFetchAtOpenMB = 64

// Cache holds the node block cache's settings.
type Cache struct {
	Dir         string `yaml:"dir"`
	DiskSizeMB  int64  `yaml:"disk-size-mb"`
	MemSizeMB   int64  `yaml:"mem-size-mb"`
	BlockSizeMB int64  `yaml:"block-size-mb"`
	// Prefetch is the number of blocks read ahead on a sequential scan.
	Prefetch int `yaml:"prefetch"`
	// Parallelism caps concurrent backend fetches.
	Parallelism int `yaml:"parallelism"`
	// FetchAtOpenMB: a file from 1 MiB up to this size, opened for reading where
	// passthrough is on and not cached whole, is fetched whole at open,
	// which waits for it (up to 2 s) and hands it to the kernel. 0: such
	// files stream through the daemon. At most 64.
	FetchAtOpenMB int64 `yaml:"fetch-at-open-mb"`
}

// Log says where and how much to log.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// File, when set, receives the log instead of stderr.
	File string `yaml:"file"`
}

// Mount is the full configuration of one `blobfs mount`.
type Mount struct {
	Storage     Storage `yaml:"storage"`
	FS          FS      `yaml:"fs"`
	Cache       Cache   `yaml:"cache"`
	Log         Log     `yaml:"log"`
	MetricsAddr string  `yaml:"metrics-addr"`
	// DebugPprof serves Go's profiler next to the metrics (loopback use).
	DebugPprof bool `yaml:"debug-pprof"`
	Foreground bool `yaml:"foreground"`
}

// Default returns the settings used where nothing else says otherwise.
// The TTLs follow BlobFuse2's documented defaults except the negative TTL:
// BlobFuse2 uses 120 s, which hides a checkpoint written by another node
// for two minutes; 5 s keeps polling loops responsive at small cost.
func Default() Mount {
	return Mount{
		Storage: Storage{MaxRetries: 3},
		FS: FS{
			UID: -1, GID: -1, Umask: 0o022,
			AttrTTL: 120 * time.Second, EntryTTL: 120 * time.Second,
			NegativeTTL: 5 * time.Second, ListTTL: 120 * time.Second,
			UploadTimeout: 5 * time.Minute, MaxRenameDirEntries: 10000,
			Passthrough:      "auto",
			IgnoreInterrupts: true,
		},
		Cache: Cache{
			Dir:           "/var/cache/blobfs",
			BlockSizeMB:   8,
			Prefetch:      16,
			Parallelism:   16,
			FetchAtOpenMB: 64,
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// Validate checks the whole configuration and names every problem at once.
func (m *Mount) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if m.Storage.Container == "" {
		bad("no container: set --container (or --container-name, AZURE_STORAGE_ACCOUNT_CONTAINER, azstorage.container)")
	} else if err := validContainerName(m.Storage.Container); err != nil {
		errs = append(errs, err)
	}
	if m.Storage.Account == "" && m.Storage.Endpoint == "" {
		bad("no storage account: set --account (or AZURE_STORAGE_ACCOUNT, azstorage.account-name) or --endpoint")
	}
	if m.Storage.Endpoint != "" && !strings.HasPrefix(m.Storage.Endpoint, "https://") && !strings.HasPrefix(m.Storage.Endpoint, "http://") {
		bad("endpoint %q: want an http:// or https:// URL", m.Storage.Endpoint)
	}
	if _, err := ParseAuthMode(string(m.Storage.AuthMode)); err != nil {
		errs = append(errs, err)
	}
	if m.Storage.MaxRetries < 0 {
		bad("max-retries %d: must not be negative", m.Storage.MaxRetries)
	}
	switch m.FS.Passthrough {
	case "auto", "on", "off":
	default:
		bad("passthrough %q: want auto, on or off", m.FS.Passthrough)
	}
	if m.FS.Umask > 0o777 {
		bad("umask %#o: must be at most 0777", m.FS.Umask)
	}
	if m.FS.UID < -1 || m.FS.UID > 1<<32-1 || m.FS.GID < -1 || m.FS.GID > 1<<32-1 {
		bad("uid/gid %d/%d out of range", m.FS.UID, m.FS.GID)
	}
	for name, d := range map[string]time.Duration{"attr-timeout": m.FS.AttrTTL, "entry-timeout": m.FS.EntryTTL, "negative-timeout": m.FS.NegativeTTL, "list-timeout": m.FS.ListTTL} {
		if d < 0 {
			bad("%s %v: must not be negative", name, d)
		}
	}
	if m.FS.UploadTimeout < 0 {
		bad("upload timeout %v is negative", m.FS.UploadTimeout)
	}
	if m.FS.MaxRenameDirEntries < -1 || m.FS.MaxRenameDirEntries == 0 {
		bad("max-rename-dir-entries %d: want a positive count, or -1 for no limit", m.FS.MaxRenameDirEntries)
	}
	if m.Cache.BlockSizeMB <= 0 || m.Cache.BlockSizeMB > 4000 {
		bad("cache block size %d MB: want 1..4000", m.Cache.BlockSizeMB)
	}
	if m.Cache.DiskSizeMB < 0 || m.Cache.MemSizeMB < 0 {
		bad("cache sizes must not be negative")
	}
	if m.Cache.Parallelism <= 0 {
		bad("cache parallelism %d: must be positive", m.Cache.Parallelism)
	}
	if m.Cache.Prefetch < 0 {
		bad("prefetch %d: must not be negative", m.Cache.Prefetch)
	}
	if m.Cache.FetchAtOpenMB < 0 || m.Cache.FetchAtOpenMB > MaxFetchAtOpenMB {
		bad("fetch-at-open-mb %d: want 0..%d", m.Cache.FetchAtOpenMB, MaxFetchAtOpenMB)
	}
	if _, err := ParseLevel(m.Log.Level); err != nil {
		errs = append(errs, err)
	}
	if m.Log.Format != "text" && m.Log.Format != "json" {
		bad("log format %q: want text or json", m.Log.Format)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// validContainerName applies the service's naming rules so a typo fails
// before the first request: 3-63 characters, lower-case letters, digits
// and single hyphens, starting and ending with a letter or digit.
func validContainerName(name string) error {
	ok := len(name) >= 3 && len(name) <= 63 && !strings.Contains(name, "--") &&
		name[0] != '-' && name[len(name)-1] != '-' && name != "$root"
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			ok = false
		}
	}
	if name == "$root" {
		ok = true
	}
	if !ok {
		return fmt.Errorf("container name %q: want 3-63 lower-case letters, digits and single hyphens", name)
	}
	return nil
}

// ParseLevel accepts slog names and BlobFuse2's log_* names.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug", "log_debug", "log_trace", "trace":
		return slog.LevelDebug, nil
	case "info", "log_info", "":
		return slog.LevelInfo, nil
	case "warn", "warning", "log_warning":
		return slog.LevelWarn, nil
	case "error", "log_err", "log_crit", "crit":
		return slog.LevelError, nil
	case "off", "log_off":
		return slog.LevelError + 100, nil
	}
	return 0, fmt.Errorf("log level %q: want debug, info, warn, error or off: %w", s, ErrInvalid)
}
