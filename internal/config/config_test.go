package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), perm); err != nil {
		t.Fatal(err)
	}
	return p
}

// load parses args as `blobfs mount` flags and runs Load.
func load(t *testing.T, args []string, opts LoadOptions) (Mount, Report, error) {
	t.Helper()
	var m Mount
	fs := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	BindFlags(fs, &m)
	if err := fs.Parse(args); err != nil {
		return m, Report{}, err
	}
	if opts.Getenv == nil {
		opts.Getenv = env()
	}
	rep, err := Load(&m, fs, opts)
	return m, rep, err
}

const blobfuse2Sample = `
allow-other: true
read-only: true
logging:
  type: base
  level: log_debug
  file-path: /var/log/blobfuse2.log
components:
  - libfuse
  - block_cache
  - attr_cache
  - azstorage
libfuse:
  attribute-expiration-sec: 30
  entry-expiration-sec: 40
  negative-entry-expiration-sec: 2
  default-permission: 0750
  ignore-open-flags: true
  max-fuse-threads: 64
block_cache:
  block-size-mb: 16
  mem-size-mb: 4096
  path: /mnt/nvme/cache
  disk-size-mb: 100000
  disk-timeout-sec: 120
  prefetch: 20
  parallelism: 64
attr_cache:
  timeout-sec: 7200
azstorage:
  type: block
  account-name: myaccount
  account-key: c2VjcmV0LWtleQ==
  mode: key
  container: training-data
  endpoint: https://myaccount.blob.core.windows.net
  tier: hot
  validate-md5: false
`

func TestBlobFuse2ConfigUnchanged(t *testing.T) {
	var logBuf bytes.Buffer
	p := writeFile(t, blobfuse2Sample, 0o600)
	m, rep, err := load(t, nil, LoadOptions{ConfigFile: p, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Format != FormatBlobFuse2 {
		t.Fatalf("format = %q", rep.Format)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"allow-other", m.FS.AllowOther, true},
		{"read-only", m.FS.ReadOnly, true},
		{"log level", m.Log.Level, "log_debug"},
		{"log file", m.Log.File, "/var/log/blobfuse2.log"},
		{"attr ttl", m.FS.AttrTTL, 30 * time.Second},
		{"entry ttl", m.FS.EntryTTL, 40 * time.Second},
		{"negative ttl", m.FS.NegativeTTL, 2 * time.Second},
		{"umask from default-permission 0750", m.FS.Umask, uint32(0o027)},
		{"list ttl", m.FS.ListTTL, 7200 * time.Second},
		{"block size", m.Cache.BlockSizeMB, int64(16)},
		{"mem", m.Cache.MemSizeMB, int64(4096)},
		{"disk", m.Cache.DiskSizeMB, int64(100000)},
		{"cache dir", m.Cache.Dir, "/mnt/nvme/cache"},
		{"prefetch", m.Cache.Prefetch, 20},
		{"parallelism", m.Cache.Parallelism, 64},
		{"account", m.Storage.Account, "myaccount"},
		{"container", m.Storage.Container, "training-data"},
		{"key", m.Storage.AccountKey.Reveal(), "c2VjcmV0LWtleQ=="},
		{"mode", m.Storage.AuthMode, AuthKey},
		{"validate-md5", m.Storage.VerifyReads, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	wantIgnored := []string{"azstorage.tier", "block_cache.disk-timeout-sec", "libfuse.max-fuse-threads"}
	if !slices.Equal(rep.Ignored, wantIgnored) {
		t.Errorf("ignored = %v, want %v", rep.Ignored, wantIgnored)
	}
	// One warning names them all, and the key never appears in the log.
	if n := strings.Count(logBuf.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings, want exactly 1:\n%s", n, logBuf.String())
	}
	for _, k := range wantIgnored {
		if !strings.Contains(logBuf.String(), k) {
			t.Errorf("warning does not name %s: %s", k, logBuf.String())
		}
	}
	if strings.Contains(logBuf.String(), "c2VjcmV0") {
		t.Fatal("account key leaked into the log")
	}
}

func TestBlobFuse2BadValues(t *testing.T) {
	for name, body := range map[string]string{
		"stream component": "components: [libfuse, stream, azstorage]\nazstorage: {container: c1c, account-name: a}",
		"adls type":        "azstorage: {type: adls, container: c1c, account-name: a}",
		"bad mode":         "azstorage: {mode: magic, container: c1c, account-name: a}",
		"bad ttl":          "libfuse: {attribute-expiration-sec: -3}\nazstorage: {container: c1c, account-name: a}",
		"bad permission":   "libfuse: {default-permission: 01777}\nazstorage: {container: c1c, account-name: a}",
		"string bool":      "read-only: maybe\nazstorage: {container: c1c, account-name: a}",
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := load(t, nil, LoadOptions{ConfigFile: writeFile(t, body, 0o600)})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestBlobfsYAMLStrict(t *testing.T) {
	good := "storage:\n  account: acct\n  container: data\n  auth-mode: workloadidentity\nfs:\n  negative-timeout: 1s\n  umask: 0002\ncache:\n  dir: /nvme\n"
	m, rep, err := load(t, nil, LoadOptions{ConfigFile: writeFile(t, good, 0o644)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Format != FormatBlobfs || m.Storage.AuthMode != AuthWorkloadIdentity || m.FS.NegativeTTL != time.Second || m.FS.Umask != 0o002 || m.Cache.Dir != "/nvme" {
		t.Fatalf("decoded %+v (format %q)", m, rep.Format)
	}
	if m.FS.AttrTTL != 120*time.Second {
		t.Fatalf("a key absent from the file lost its default: attr ttl %v", m.FS.AttrTTL)
	}
	for name, body := range map[string]string{
		"unknown key":    "storage:\n  acount: typo\n",
		"malformed yaml": "storage: [unclosed\n",
		"wrong type":     "fs:\n  read-only: [1,2]\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := load(t, nil, LoadOptions{ConfigFile: writeFile(t, body, 0o600)})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	_, _, err = load(t, nil, LoadOptions{ConfigFile: filepath.Join(t.TempDir(), "missing.yaml")})
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestPrecedenceFlagsOverFileOverEnv(t *testing.T) {
	file := writeFile(t, "azstorage:\n  account-name: fromfile\n  container: filecontainer\nlibfuse:\n  negative-entry-expiration-sec: 9\n", 0o600)
	m, _, err := load(t, []string{"--container-name", "flagcontainer", "--read-only"}, LoadOptions{
		ConfigFile: file,
		Getenv: env("AZURE_STORAGE_ACCOUNT", "fromenv", "AZURE_STORAGE_ACCOUNT_CONTAINER", "envcontainer",
			"AZURE_STORAGE_ACCESS_KEY", "k3y", "AZURE_STORAGE_AUTH_TYPE", "Key", "AZURE_STORAGE_BLOB_ENDPOINT", "http://127.0.0.1:1/acct"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.Storage.Account != "fromfile" || m.Storage.Container != "flagcontainer" || !m.FS.ReadOnly ||
		m.FS.NegativeTTL != 9*time.Second || m.Storage.AccountKey.Reveal() != "k3y" ||
		m.Storage.AuthMode != AuthKey || m.Storage.Endpoint != "http://127.0.0.1:1/acct" {
		t.Fatalf("merged = %+v", m)
	}
}

func TestWorkloadIdentityEnv(t *testing.T) {
	m, _, err := load(t, []string{"--container", "ckpt"}, LoadOptions{Getenv: env(
		"AZURE_STORAGE_ACCOUNT", "acct", "AZURE_CLIENT_ID", "cid", "AZURE_TENANT_ID", "tid",
		"AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token",
		"AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/")})
	if err != nil {
		t.Fatal(err)
	}
	s := m.Storage
	if s.ClientID != "cid" || s.TenantID != "tid" || !strings.HasSuffix(s.TokenFile, "azure-identity-token") || s.AuthorityHost == "" {
		t.Fatalf("storage = %+v", s)
	}
}

func TestValidation(t *testing.T) {
	base := []string{"--account", "acct"}
	for name, args := range map[string][]string{
		"no container":       {"--account", "acct"},
		"bad container":      append(base, "--container", "Bad_Name"),
		"short container":    append(base, "--container", "ab"),
		"double hyphen":      append(base, "--container", "a--b"),
		"negative ttl":       append(base, "--container", "abc", "--attr-timeout", "-1s"),
		"zero block size":    append(base, "--container", "abc", "--block-size-mb", "0"),
		"endpoint no scheme": append(base, "--container", "abc", "--endpoint", "127.0.0.1:10000"),
		"no account":         {"--container", "abc"},
		"bad passthrough":    append(base, "--container", "abc", "--passthrough", "always"),
		"fetch at open > 64": append(base, "--container", "abc", "--fetch-at-open-mb", "65"),
		"fetch at open < 0":  append(base, "--container", "abc", "--fetch-at-open-mb", "-1"),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := load(t, args, LoadOptions{})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	// Flag values that cannot parse fail at parse time.
	for _, args := range [][]string{{"--auth-mode", "password"}, {"--umask", "999"}, {"--uid", "x"}} {
		if _, _, err := load(t, args, LoadOptions{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	const key = "super-secret-account-key"
	m := Default()
	m.Storage.AccountKey = Secret(key)
	m.Storage.SAS = Secret("sv=2024&sig=abc")
	m.Storage.ClientSecret = Secret("spn-secret")
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("config", "mount", m, "key", m.Storage.AccountKey)
	j, _ := json.Marshal(m)
	y, _ := yaml.Marshal(m)
	outs := []string{fmt.Sprint(m), fmt.Sprintf("%+v", m), fmt.Sprintf("%#v", m), logBuf.String(), string(j), string(y)}
	for i, out := range outs {
		for _, s := range []string{key, "sig=abc", "spn-secret"} {
			if strings.Contains(out, s) {
				t.Errorf("output %d leaks %q: %s", i, s, out)
			}
		}
	}
	if m.Storage.AccountKey.Reveal() != key {
		t.Fatal("Reveal lost the value")
	}
}

func TestNoSecretFlags(t *testing.T) {
	var m Mount
	fs := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	BindFlags(fs, &m)
	fs.VisitAll(func(f *pflag.Flag) {
		for _, bad := range []string{"key", "sas", "secret", "password", "token"} {
			if strings.Contains(f.Name, bad) && f.Name != "token-file" {
				t.Errorf("flag --%s would put a secret in argv", f.Name)
			}
		}
	})
}

func TestWorldReadableSecretWarns(t *testing.T) {
	var logBuf bytes.Buffer
	p := writeFile(t, "azstorage:\n  account-name: a\n  container: abc\n  account-key: s3cr3t\n", 0o644)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := load(t, nil, LoadOptions{ConfigFile: p, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logBuf.String(), "chmod 600") || strings.Contains(logBuf.String(), "s3cr3t") {
		t.Fatalf("log = %s", logBuf.String())
	}
}

// TestEveryFlagSurvivesLoad: Load rebuilds the settings from defaults,
// environment and file and then re-applies the flags the user set, so a
// flag it did not know about would be parsed and silently dropped
// (--ignore-interrupts was, until BindFlags marked every flag it defines).
func TestEveryFlagSurvivesLoad(t *testing.T) {
	var m Mount
	fs := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	BindFlags(fs, &m)
	fs.VisitAll(func(f *pflag.Flag) {
		if _, ok := f.Annotations[boundAnnotation]; !ok {
			t.Errorf("--%s is not re-applied by Load", f.Name)
		}
	})
	got, _, err := load(t, []string{"--container", "data", "--account", "acct", "--ignore-interrupts=false", "--direct-io"}, LoadOptions{
		Getenv: env("AZURE_STORAGE_ACCESS_KEY", "k3y"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.FS.IgnoreInterrupts || !got.FS.DirectIO {
		t.Errorf("after Load: ignore-interrupts %v, direct-io %v; want false, true", got.FS.IgnoreInterrupts, got.FS.DirectIO)
	}
	if !Default().FS.IgnoreInterrupts {
		t.Error("interrupts are not ignored by default")
	}
}
