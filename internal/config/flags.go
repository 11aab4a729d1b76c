package config

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
)

// boundAnnotation marks the flags BindFlags defines, on the flag itself
// (no package state), so Load re-applies only these.
const boundAnnotation = "blobfs.config/bound"

func mark(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, boundAnnotation, []string{"true"}); err != nil {
			panic("config: " + err.Error())
		}
	}
}

// BindFlags defines `blobfs mount`'s settings as flags on fs, writing into
// m. There is deliberately no flag for an account key, SAS or client
// secret: they would be visible to every user through `ps`.
func BindFlags(fs *pflag.FlagSet, m *Mount) {
	before := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { before[f.Name] = true })
	*m = Default()
	s, f, c := &m.Storage, &m.FS, &m.Cache
	fs.StringVar(&s.Container, "container", s.Container, "container to mount (env AZURE_STORAGE_ACCOUNT_CONTAINER)")
	fs.StringVar(&s.Container, "container-name", s.Container, "alias of --container, as BlobFuse2 spells it")
	fs.StringVar(&s.Account, "account", s.Account, "storage account name (env AZURE_STORAGE_ACCOUNT)")
	fs.StringVar(&s.Endpoint, "endpoint", s.Endpoint, "blob service URL, default https://ACCOUNT.blob.core.windows.net (env AZURE_STORAGE_BLOB_ENDPOINT)")
	fs.StringVar(&s.Subdirectory, "subdirectory", s.Subdirectory, "mount only this prefix of the container")
	fs.Var((*authModeValue)(&s.AuthMode), "auth-mode", "key|sas|spn|msi|azcli|workloadidentity|anonymous (env AZURE_STORAGE_AUTH_TYPE); unset picks from the credentials present")
	fs.StringVar(&s.ClientID, "client-id", s.ClientID, "client id of the service principal, managed or workload identity (env AZURE_CLIENT_ID)")
	fs.StringVar(&s.TenantID, "tenant-id", s.TenantID, "Entra tenant id (env AZURE_TENANT_ID)")
	fs.StringVar(&s.ManagedIdentityResourceID, "msi-resource-id", s.ManagedIdentityResourceID, "resource id of a user-assigned managed identity")
	fs.StringVar(&s.TokenFile, "token-file", s.TokenFile, "federated token file, re-read at every refresh (env AZURE_FEDERATED_TOKEN_FILE)")
	fs.StringVar(&s.ClientCertificateFile, "client-certificate-file", s.ClientCertificateFile, "service principal certificate, PEM with its key (env AZURE_CLIENT_CERTIFICATE_PATH)")
	fs.StringVar(&s.AuthorityHost, "authority-host", s.AuthorityHost, "Entra authority host (env AZURE_AUTHORITY_HOST)")
	fs.BoolVar(&s.VerifyReads, "verify-reads", s.VerifyReads, "verify a transfer MD5 of every range read (caps GETs at 4 MiB); off, integrity in transit is TLS's")
	fs.IntVar(&s.MaxRetries, "max-retries", s.MaxRetries, "retries of a failed storage request before the operation fails")

	fs.BoolVar(&f.ReadOnly, "read-only", f.ReadOnly, "mount read-only: every change fails with EROFS")
	fs.BoolVar(&f.AllowOther, "allow-other", f.AllowOther, "let users other than the mounting one access the mount (Ray images run as uid 1000)")
	fs.Int64Var(&f.UID, "uid", f.UID, "owner uid of every file (-1: the mounting user)")
	fs.Int64Var(&f.GID, "gid", f.GID, "owner gid of every file (-1: the mounting group)")
	fs.Var((*octalValue)(&f.Umask), "umask", "permission bits removed from 0777 dirs and 0666 files (octal)")
	fs.DurationVar(&f.AttrTTL, "attr-timeout", f.AttrTTL, "how long the kernel caches file attributes")
	fs.DurationVar(&f.EntryTTL, "entry-timeout", f.EntryTTL, "how long the kernel caches name lookups")
	fs.DurationVar(&f.NegativeTTL, "negative-timeout", f.NegativeTTL, "how long a missing name stays missing; files created elsewhere appear after at most this")
	fs.DurationVar(&f.ListTTL, "list-timeout", f.ListTTL, "how long blobfs trusts a directory listing it fetched")
	fs.BoolVar(&f.DirectIO, "direct-io", f.DirectIO, "bypass the kernel page cache (turns passthrough off)")
	fs.BoolVar(&f.IgnoreInterrupts, "ignore-interrupts", f.IgnoreInterrupts, "let a read, lookup or listing finish when its caller gets a signal it handles; only a caller being killed stops it (false: any signal stops it with EINTR)")
	fs.StringVar(&f.Passthrough, "passthrough", f.Passthrough, "hand files the node cache holds whole to the kernel (FUSE passthrough, Linux 6.9+, root): auto (read-only mounts), on (also writable ones; a write open of a file open for passthrough reads fails with ETXTBSY) or off")
	fs.DurationVar(&f.UploadTimeout, "upload-timeout", f.UploadTimeout, "longest a commit (fsync/close) or block upload may take, retries included, before it fails with EIO (0: no bound)")
	fs.IntVar(&f.MaxRenameDirEntries, "max-rename-dir-entries", f.MaxRenameDirEntries, "largest directory rename (one copy per blob); beyond it rename fails with EXDEV (-1: no limit)")

	fs.StringVar(&c.Dir, "cache-dir", c.Dir, "node block cache directory (local NVMe), shared by every mount on the node")
	fs.Int64Var(&c.DiskSizeMB, "cache-size-mb", c.DiskSizeMB, "disk budget of the block cache in MB (0: 80% of the cache filesystem)")
	fs.Int64Var(&c.MemSizeMB, "cache-mem-mb", c.MemSizeMB, "RAM tier budget in MB (0: automatic)")
	fs.Int64Var(&c.BlockSizeMB, "block-size-mb", c.BlockSizeMB, "cache block size in MB")
	fs.IntVar(&c.Prefetch, "prefetch", c.Prefetch, "blocks read ahead on a sequential scan")
	fs.IntVar(&c.Parallelism, "parallelism", c.Parallelism, "concurrent backend fetches")
	fs.Int64Var(&c.FetchAtOpenMB, "fetch-at-open-mb", c.FetchAtOpenMB, "a file up to this size (MB, at most 64), opened for reading with passthrough on and not cached whole, is fetched whole at open and handed to the kernel (0: it streams through the daemon)")

	fs.StringVar(&m.Log.File, "log-file", m.Log.File, "write the log to this file instead of stderr")
	fs.StringVar(&m.MetricsAddr, "metrics-addr", m.MetricsAddr, "serve Prometheus metrics on this address (e.g. 127.0.0.1:9090); off when empty")
	fs.BoolVar(&m.DebugPprof, "debug-pprof", m.DebugPprof, "also serve /debug/pprof/ on the metrics address (diagnostics)")
	fs.BoolVar(&m.Foreground, "foreground", m.Foreground, "stay attached to the terminal instead of daemonizing")

	// Load re-applies every flag defined here over the environment and the
	// config file; one left unmarked would be parsed and then silently
	// dropped (--ignore-interrupts was, before this marked them all).
	fs.VisitAll(func(f *pflag.Flag) {
		if !before[f.Name] {
			mark(fs, f.Name)
		}
	})
}

type authModeValue AuthMode

func (v *authModeValue) String() string { return string(*v) }
func (v *authModeValue) Type() string   { return "mode" }
func (v *authModeValue) Set(s string) error {
	m, err := ParseAuthMode(s)
	if err != nil {
		return err
	}
	*v = authModeValue(m)
	return nil
}

type octalValue uint32

func (v *octalValue) String() string { return fmt.Sprintf("%04o", uint32(*v)) }
func (v *octalValue) Type() string   { return "octal" }
func (v *octalValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("%q is not an octal mode like 022: %w", s, ErrInvalid)
	}
	*v = octalValue(n)
	return nil
}
