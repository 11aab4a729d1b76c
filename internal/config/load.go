package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// FileFormat names the kind of config file that was read.
type FileFormat string

// Config file formats.
const (
	FormatNone      FileFormat = ""
	FormatBlobFuse2 FileFormat = "blobfuse2"
	FormatBlobfs    FileFormat = "blobfs"
)

// LoadOptions are the inputs besides the flags.
type LoadOptions struct {
	// ConfigFile is a BlobFuse2 config.yaml or a blobfs YAML file; empty for none.
	ConfigFile string
	// Getenv looks up environment variables; nil means os.LookupEnv.
	Getenv func(string) (string, bool)
	// Logger receives the one warning naming unsupported BlobFuse2 settings.
	Logger *slog.Logger
}

// Report says what Load did, for logs and tests.
type Report struct {
	Format FileFormat
	// Ignored lists BlobFuse2 settings blobfs does not support, as
	// dotted paths ("file_cache.policy").
	Ignored []string
}

// Load fills m from defaults, environment, config file and the flags set
// on fs (which must have been bound to m with BindFlags), in that order of
// increasing precedence, and validates the result.
func Load(m *Mount, fs *pflag.FlagSet, opts LoadOptions) (Report, error) {
	var rep Report
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// Flags were parsed into m already; remember the ones the user set,
	// rebuild from lower-precedence sources, then apply them again.
	changed := map[string]string{}
	if fs != nil {
		fs.Visit(func(f *pflag.Flag) {
			if _, bound := f.Annotations[boundAnnotation]; bound {
				changed[f.Name] = f.Value.String()
			}
		})
	}
	*m = Default()
	if err := applyEnv(m, getenv); err != nil {
		return rep, err
	}
	if opts.ConfigFile != "" {
		var err error
		rep, err = applyFile(m, opts.ConfigFile, log)
		if err != nil {
			return rep, err
		}
	}
	names := make([]string, 0, len(changed))
	for n := range changed {
		names = append(names, n)
	}
	slices.Sort(names) // --container-name and --container: last one wins, deterministically
	for _, n := range names {
		if err := fs.Set(n, changed[n]); err != nil {
			return rep, fmt.Errorf("flag --%s: %w: %w", n, ErrInvalid, err)
		}
	}
	if err := m.Validate(); err != nil {
		return rep, err
	}
	return rep, nil
}

// StorageFromEnv returns the storage settings the environment alone gives
// (BlobFuse2's and azidentity's variables): how a service such as the CSI
// controller finds its own identity.
func StorageFromEnv(getenv func(string) (string, bool)) (Storage, error) {
	m := Default()
	if getenv == nil {
		getenv = os.LookupEnv
	}
	err := applyEnv(&m, getenv)
	return m.Storage, err
}

func applyEnv(m *Mount, getenv func(string) (string, bool)) error {
	str := func(dst *string, names ...string) {
		for _, n := range names {
			if v, ok := getenv(n); ok && v != "" {
				*dst = v
				return
			}
		}
	}
	secret := func(dst *Secret, name string) {
		if v, ok := getenv(name); ok && v != "" {
			*dst = Secret(v)
		}
	}
	s := &m.Storage
	str(&s.Account, "AZURE_STORAGE_ACCOUNT")
	str(&s.Container, "AZURE_STORAGE_ACCOUNT_CONTAINER")
	str(&s.Endpoint, "AZURE_STORAGE_BLOB_ENDPOINT")
	secret(&s.AccountKey, "AZURE_STORAGE_ACCESS_KEY")
	secret(&s.SAS, "AZURE_STORAGE_SAS_TOKEN")
	secret(&s.ClientSecret, "AZURE_CLIENT_SECRET")
	secret(&s.ClientSecret, "AZURE_STORAGE_SPN_CLIENT_SECRET") // BlobFuse2's name wins
	str(&s.ClientCertificateFile, "AZURE_CLIENT_CERTIFICATE_PATH")
	// BlobFuse2's names first, then what the AKS workload identity
	// webhook injects.
	str(&s.ClientID, "AZURE_STORAGE_IDENTITY_CLIENT_ID", "AZURE_STORAGE_SPN_CLIENT_ID", "AZURE_CLIENT_ID")
	str(&s.TenantID, "AZURE_STORAGE_SPN_TENANT_ID", "AZURE_TENANT_ID")
	str(&s.ManagedIdentityResourceID, "AZURE_STORAGE_IDENTITY_RESOURCE_ID")
	str(&s.TokenFile, "AZURE_FEDERATED_TOKEN_FILE")
	str(&s.AuthorityHost, "AZURE_STORAGE_AAD_ENDPOINT", "AZURE_AUTHORITY_HOST")
	if v, ok := getenv("AZURE_STORAGE_AUTH_TYPE"); ok && v != "" {
		mode, err := ParseAuthMode(v)
		if err != nil {
			return fmt.Errorf("AZURE_STORAGE_AUTH_TYPE: %w", err)
		}
		s.AuthMode = mode
	}
	return nil
}

func applyFile(m *Mount, path string, log *slog.Logger) (Report, error) {
	var rep Report
	raw, err := os.ReadFile(path)
	if err != nil {
		return rep, fmt.Errorf("config file: %w: %w", ErrInvalid, err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(raw, &top); err != nil {
		return rep, fmt.Errorf("config file %s is not valid YAML: %w: %w", path, ErrInvalid, err)
	}
	if isBlobFuse2(top) {
		rep.Format = FormatBlobFuse2
		rep.Ignored, err = applyBlobFuse2(m, top)
		if err != nil {
			return rep, fmt.Errorf("config file %s: %w", path, err)
		}
		if len(rep.Ignored) > 0 {
			log.Warn("blobfuse2 config: these settings are not supported by blobfs and are ignored", "file", path, "settings", strings.Join(rep.Ignored, ", "))
		}
	} else {
		rep.Format = FormatBlobfs
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(m); err != nil && !errors.Is(err, io.EOF) {
			return rep, fmt.Errorf("config file %s: %w: %w", path, ErrInvalid, err)
		}
	}
	if m.Storage.AccountKey != "" || m.Storage.SAS != "" || m.Storage.ClientSecret != "" {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o044 != 0 {
			log.Warn("config file holds a secret and is readable by other users; chmod 600 it", "file", path, "mode", st.Mode().Perm().String())
		}
	}
	return rep, nil
}

// blobfuse2Sections are BlobFuse2's top-level keys; any of them marks a
// file as BlobFuse2's format.
var blobfuse2Sections = []string{"components", "libfuse", "azstorage", "attr_cache", "block_cache", "file_cache", "logging", "stream"}

func isBlobFuse2(top map[string]any) bool {
	for _, k := range blobfuse2Sections {
		if _, ok := top[k]; ok {
			return true
		}
	}
	return false
}

// setter applies one BlobFuse2 setting to m.
type setter func(m *Mount, v any) error

func seconds(dst func(*Mount) *time.Duration) setter {
	return func(m *Mount, v any) error {
		n, err := toInt(v)
		if err != nil || n < 0 {
			return fmt.Errorf("want a non-negative number of seconds, got %v", v)
		}
		*dst(m) = time.Duration(n) * time.Second
		return nil
	}
}

func boolean(dst func(*Mount) *bool) setter {
	return func(m *Mount, v any) error {
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("want true or false, got %v", v)
		}
		*dst(m) = b
		return nil
	}
}

func text(dst func(*Mount) *string) setter {
	return func(m *Mount, v any) error {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("want a string, got %v", v)
		}
		*dst(m) = s
		return nil
	}
}

func secretText(dst func(*Mount) *Secret) setter {
	return func(m *Mount, v any) error {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("want a string")
		}
		*dst(m) = Secret(s)
		return nil
	}
}

func megabytes(dst func(*Mount) *int64) setter {
	return func(m *Mount, v any) error {
		n, err := toInt(v)
		if err != nil || n < 0 {
			return fmt.Errorf("want a non-negative number of MB, got %v", v)
		}
		*dst(m) = n
		return nil
	}
}

func count(dst func(*Mount) *int) setter {
	return func(m *Mount, v any) error {
		n, err := toInt(v)
		if err != nil || n < 0 {
			return fmt.Errorf("want a non-negative integer, got %v", v)
		}
		*dst(m) = int(n)
		return nil
	}
}

// accepted is a setting whose behaviour blobfs always has (or for which
// the setting has no meaning here): honoured by doing nothing.
func accepted(*Mount, any) error { return nil }

// blobfuse2Keys maps every BlobFuse2 setting blobfs honours. Anything not
// here is reported as ignored, all in one warning.
var blobfuse2Keys = map[string]setter{
	"foreground":  boolean(func(m *Mount) *bool { return &m.Foreground }),
	"read-only":   boolean(func(m *Mount) *bool { return &m.FS.ReadOnly }),
	"allow-other": boolean(func(m *Mount) *bool { return &m.FS.AllowOther }),
	"nonempty":    accepted, // blobfs mounts over non-empty directories like FUSE's nonempty.

	"logging.level":     text(func(m *Mount) *string { return &m.Log.Level }),
	"logging.file-path": text(func(m *Mount) *string { return &m.Log.File }),
	"logging.type": func(m *Mount, v any) error {
		switch v {
		case "silent":
			m.Log.Level = "off"
		case "syslog", "base":
			// syslog: blobfs logs to stderr for journald; base: file-path.
		default:
			return fmt.Errorf("want syslog, silent or base, got %v", v)
		}
		return nil
	},

	"components": func(m *Mount, v any) error {
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("want a list of components")
		}
		for _, c := range list {
			switch c {
			case "libfuse", "azstorage", "attr_cache", "block_cache", "file_cache":
			case "stream", "xload", "distributed_cache", "loopbackfs":
				return fmt.Errorf("component %q is not supported by blobfs (use block_cache)", c)
			default:
				return fmt.Errorf("unknown component %v", c)
			}
		}
		return nil
	},

	"libfuse.attribute-expiration-sec":      seconds(func(m *Mount) *time.Duration { return &m.FS.AttrTTL }),
	"libfuse.entry-expiration-sec":          seconds(func(m *Mount) *time.Duration { return &m.FS.EntryTTL }),
	"libfuse.negative-entry-expiration-sec": seconds(func(m *Mount) *time.Duration { return &m.FS.NegativeTTL }),
	"libfuse.direct-io":                     boolean(func(m *Mount) *bool { return &m.FS.DirectIO }),
	"libfuse.default-permission": func(m *Mount, v any) error {
		n, err := toInt(v)
		if err != nil || n < 0 || n > 0o777 {
			return fmt.Errorf("want an octal mode like 0755, got %v", v)
		}
		m.FS.Umask = uint32(0o777 &^ n)
		return nil
	},
	// blobfs does not use the kernel writeback cache, so O_APPEND and
	// O_WRONLY work and these two have nothing to do.
	"libfuse.ignore-open-flags":       accepted,
	"libfuse.disable-writeback-cache": accepted,

	"attr_cache.timeout-sec": seconds(func(m *Mount) *time.Duration { return &m.FS.ListTTL }),
	"attr_cache.no-symlinks": boolean(func(m *Mount) *bool { return &m.FS.NoSymlinks }),
	"attr_cache.enable-symlinks": func(m *Mount, v any) error {
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("want true or false, got %v", v)
		}
		m.FS.NoSymlinks = !b
		return nil
	},

	"block_cache.block-size-mb": megabytes(func(m *Mount) *int64 { return &m.Cache.BlockSizeMB }),
	"block_cache.mem-size-mb":   megabytes(func(m *Mount) *int64 { return &m.Cache.MemSizeMB }),
	"block_cache.disk-size-mb":  megabytes(func(m *Mount) *int64 { return &m.Cache.DiskSizeMB }),
	"block_cache.path":          text(func(m *Mount) *string { return &m.Cache.Dir }),
	"block_cache.prefetch":      count(func(m *Mount) *int { return &m.Cache.Prefetch }),
	"block_cache.parallelism":   count(func(m *Mount) *int { return &m.Cache.Parallelism }),
	// BlobFuse2's file cache keeps whole files; blobfs's block cache on
	// the same path and budget serves the same purpose.
	"file_cache.path":        text(func(m *Mount) *string { return &m.Cache.Dir }),
	"file_cache.max-size-mb": megabytes(func(m *Mount) *int64 { return &m.Cache.DiskSizeMB }),
	// blobfs reuses a non-empty cache dir after checking ETags.
	"file_cache.allow-non-empty-temp": accepted,

	"azstorage.type": func(m *Mount, v any) error {
		if v != "block" {
			return fmt.Errorf("only type: block is supported, got %v", v)
		}
		return nil
	},
	"azstorage.account-name":     text(func(m *Mount) *string { return &m.Storage.Account }),
	"azstorage.container":        text(func(m *Mount) *string { return &m.Storage.Container }),
	"azstorage.endpoint":         text(func(m *Mount) *string { return &m.Storage.Endpoint }),
	"azstorage.subdirectory":     text(func(m *Mount) *string { return &m.Storage.Subdirectory }),
	"azstorage.account-key":      secretText(func(m *Mount) *Secret { return &m.Storage.AccountKey }),
	"azstorage.sas":              secretText(func(m *Mount) *Secret { return &m.Storage.SAS }),
	"azstorage.clientsecret":     secretText(func(m *Mount) *Secret { return &m.Storage.ClientSecret }),
	"azstorage.appid":            text(func(m *Mount) *string { return &m.Storage.ClientID }),
	"azstorage.clientid":         text(func(m *Mount) *string { return &m.Storage.ClientID }),
	"azstorage.resid":            text(func(m *Mount) *string { return &m.Storage.ManagedIdentityResourceID }),
	"azstorage.tenantid":         text(func(m *Mount) *string { return &m.Storage.TenantID }),
	"azstorage.oauth-token-path": text(func(m *Mount) *string { return &m.Storage.TokenFile }),
	"azstorage.aadendpoint":      text(func(m *Mount) *string { return &m.Storage.AuthorityHost }),
	"azstorage.max-retries":      count(func(m *Mount) *int { return &m.Storage.MaxRetries }),
	"azstorage.validate-md5":     boolean(func(m *Mount) *bool { return &m.Storage.VerifyReads }),
	"azstorage.mode": func(m *Mount, v any) error {
		s, _ := v.(string)
		mode, err := ParseAuthMode(s)
		if err != nil {
			return err
		}
		m.Storage.AuthMode = mode
		return nil
	},
	// blobfs always understands prefixes as directories.
	"azstorage.virtual-directory": accepted,
}

// applyBlobFuse2 walks the file and applies every known key; it returns
// the unknown ones. A known key with a bad value is an error.
func applyBlobFuse2(m *Mount, top map[string]any) ([]string, error) {
	var ignored []string
	var errs []error
	var walk func(prefix string, node map[string]any)
	walk = func(prefix string, node map[string]any) {
		keys := make([]string, 0, len(node))
		for k := range node {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v, path := node[k], prefix+k
			if set, ok := blobfuse2Keys[path]; ok {
				if err := set(m, v); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", path, err))
				}
				continue
			}
			if sub, ok := v.(map[string]any); ok && prefix == "" {
				walk(path+".", sub)
				continue
			}
			ignored = append(ignored, path)
		}
	}
	walk("", top)
	if err := errors.Join(errs...); err != nil {
		return ignored, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return ignored, nil
}

func toInt(v any) (int64, error) {
	switch n := v.(type) {
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	case uint64:
		return int64(n), nil
	case float64:
		if n == float64(int64(n)) {
			return int64(n), nil
		}
	case string:
		return strconv.ParseInt(n, 0, 64)
	}
	return 0, fmt.Errorf("not an integer: %v", v)
}
