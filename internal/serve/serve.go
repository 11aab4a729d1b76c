// Package serve runs one mount: it opens the container, mounts it with
// package fs, serves metrics, reports readiness and unmounts cleanly when
// its context ends (SIGTERM, SIGINT) or the kernel unmounts it
// (`blobfs unmount`, umount(8)).
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/cache"
	"github.com/blobfs/blobfs/fs"
	"github.com/blobfs/blobfs/internal/backend"
	"github.com/blobfs/blobfs/internal/config"
	"github.com/blobfs/blobfs/internal/metrics"
	"github.com/blobfs/blobfs/internal/mountinfo"
	"github.com/blobfs/blobfs/prefetch"
)

// ErrMountpoint marks a mountpoint that cannot be used.
var ErrMountpoint = errors.New("bad mountpoint")

// Options are Run's inputs besides the configuration.
type Options struct {
	Logger *slog.Logger
	// Ready is called once: with nil when the mount serves, or with the
	// error that prevented it (daemon.Ready).
	Ready func(error)
	// Transport overrides the HTTP client (tests).
	Transport policy.Transporter
	// ControlSocket is the control socket's path; empty means the default
	// (ControlSocketPath), "none" means no socket. The control file inside
	// the mount is always there.
	ControlSocket string
	// AutoPrefetch configures automatic prefetch; nil means
	// prefetch.DefaultAutoOptions.
	AutoPrefetch *prefetch.AutoOptions
}

// Run mounts cfg at mountpoint and serves until ctx ends or the mount goes
// away. It returns nil after a clean unmount.
func Run(ctx context.Context, mountpoint string, cfg config.Mount, opts Options) (err error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ready := opts.Ready
	if ready == nil {
		ready = func(error) {}
	}
	setMemoryLimit(cfg, log)
	readied := false
	defer func() {
		if !readied {
			ready(err)
		}
	}()

	mp, err := CheckMountpoint(mountpoint)
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry()
	b, err := backend.Open(ctx, cfg.Storage, backend.Options{Logger: log, Registerer: reg, Transport: opts.Transport,
		DisableRangeChecksums: !cfg.Storage.VerifyReads})
	if err != nil {
		return err
	}
	store := metrics.InstrumentStore(b.Store, reg)
	fo, err := fsOptions(cfg, store, b, log)
	if err != nil {
		return err
	}
	c, err := cache.Open(ctx, cacheConfig(cfg, log, reg))
	if err != nil {
		return fmt.Errorf("block cache in %s: %w", cfg.Cache.Dir, err)
	}
	defer c.Close()
	cr := NewCacheReader(c, b, store, cfg, log) // control.go; the standalone prefetch uses the same
	defer cr.Close()
	fo.Reader = cr
	names := &volumeNames{}
	runner, err := newRunner(cfg, store, cr, names, reg, log) // control.go
	if err != nil {
		return err
	}
	stopAuto := autoPrefetch(&fo, cr, runner, opts) // control.go
	defer stopAuto()
	srvCtx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMetrics()
	if cfg.MetricsAddr != "" {
		addr, err := metrics.Serve(srvCtx, cfg.MetricsAddr, reg, cfg.DebugPprof)
		if err != nil {
			return fmt.Errorf("metrics address %q: %w", cfg.MetricsAddr, err)
		}
		log.Info("serving metrics", "addr", addr.String())
	}
	m, err := fs.Mount(ctx, mp, fo)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mp, err)
	}
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "blobfs", Subsystem: "fuse", Name: "passthrough_opens_total",
		Help: "Opens handed to the kernel with the node cache's file (FUSE passthrough): their reads never reach the daemon.",
	}, func() float64 { return float64(m.Volume().PassthroughOpens()) })); err != nil {
		log.Warn("metrics: passthrough opens", "err", err)
	}
	log.Info("mounted", "mountpoint", mp, "account", b.Account, "container", b.Container,
		"subdirectory", cfg.Storage.Subdirectory, "read_only", cfg.FS.ReadOnly)
	closeControl := serveControl(ctx, m, mp, cfg, opts, runner, names, log) // control.go
	defer closeControl()
	readied = true
	ready(nil)

	done := make(chan struct{})
	go func() { m.Wait(); close(done) }()
	select {
	case <-done:
		log.Info("unmounted", "mountpoint", mp)
		return nil
	case <-ctx.Done():
	}
	log.Info("signal received: unmounting", "mountpoint", mp)
	uctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Unmount(uctx); err != nil {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	<-done
	log.Info("unmounted", "mountpoint", mp)
	return nil
}

func keyPrefix(subdir string) string {
	if subdir = strings.Trim(subdir, "/"); subdir != "" {
		return subdir + "/"
	}
	return ""
}

// cacheConfig maps the mount configuration onto the node block cache's.
// The cache block size is the cache's own (1 MiB, chosen by measurement);
// --block-size-mb sizes upload blocks and readahead steps.
func cacheConfig(cfg config.Mount, log *slog.Logger, reg prometheus.Registerer) cache.Config {
	cc := cache.Config{
		Dir:                filepath.Join(cfg.Cache.Dir, "blocks"),
		DiskBudgetBytes:    cfg.Cache.DiskSizeMB << 20,
		MemBudgetBytes:     cfg.Cache.MemSizeMB << 20,
		MaxInflightFetches: cfg.Cache.Parallelism,
		Logger:             log,
		Registerer:         reg,
	}
	if cc.DiskBudgetBytes == 0 {
		cc.DiskBudgetPercent = 80
	}
	return cc
}

// fsOptions maps the mount configuration onto the FUSE volume's options.
func fsOptions(cfg config.Mount, store blob.Store, b *backend.Backend, log *slog.Logger) (fs.Options, error) {
	o := fs.DefaultOptions()
	o.Store = store
	o.Logger = log
	o.ReadOnly = cfg.FS.ReadOnly
	o.AllowOther = cfg.FS.AllowOther
	if cfg.FS.UID >= 0 {
		o.UID = uint32(cfg.FS.UID)
	}
	if cfg.FS.GID >= 0 {
		o.GID = uint32(cfg.FS.GID)
	}
	o.Umask = cfg.FS.Umask
	o.AttrTTL, o.EntryTTL, o.NegativeTTL, o.DirListTTL = cfg.FS.AttrTTL, cfg.FS.EntryTTL, cfg.FS.NegativeTTL, cfg.FS.ListTTL
	o.BlockSize = cfg.Cache.BlockSizeMB << 20
	o.Concurrency = min(max(cfg.Cache.Parallelism, 1), 256)
	o.UploadTimeout = cfg.FS.UploadTimeout
	o.MaxRenameDirEntries = cfg.FS.MaxRenameDirEntries
	o.DirectIO = cfg.FS.DirectIO
	o.InterruptOnAnySignal = !cfg.FS.IgnoreInterrupts
	mode, err := fs.ParsePassthroughMode(cfg.FS.Passthrough)
	if err != nil {
		return o, err
	}
	o.Passthrough = mode
	// Write sessions stage on the cache disk, and statfs reports it: that
	// is the space a training job's "enough free disk?" check is about.
	staging := filepath.Join(cfg.Cache.Dir, "staging")
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return o, fmt.Errorf("cache directory %s: %w", cfg.Cache.Dir, err)
	}
	o.StagingDir, o.StatfsDir = staging, cfg.Cache.Dir
	o.FSName = "blobfs:" + b.Account + "/" + b.Container
	return o, nil
}

// CheckMountpoint resolves mountpoint and refuses what cannot work: a
// missing path, a file, a directory that is already a mount point.
func CheckMountpoint(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrMountpoint, mountpoint, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%w: %s does not exist or cannot be reached (create the directory first): %w", ErrMountpoint, abs, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%w: %s is not a directory", ErrMountpoint, abs)
	}
	if mounted, err := mountinfo.IsMountPoint(abs); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrMountpoint, abs, err)
	} else if mounted {
		return "", fmt.Errorf("%w: %s is already a mount point (unmount it first: blobfs unmount %s)", ErrMountpoint, abs, abs)
	}
	return abs, nil
}

// daemonOverheadBytes is what the daemon needs beyond the RAM tier: a
// read fetch buffer per parallel fetch, a write session's blocks in
// flight, FUSE buffers and the Go runtime's own.
const daemonOverheadBytes = 512 << 20

// setMemoryLimit gives the Go runtime a soft memory limit of the RAM
// tier's budget plus daemonOverheadBytes (unless GOMEMLIMIT is set), so
// the garbage collector works harder before the daemon's resident size
// drifts far past what the operator budgeted. It is soft: the daemon
// never fails for it, it only collects more often near it.
func setMemoryLimit(cfg config.Mount, log *slog.Logger) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return
	}
	mem := cfg.Cache.MemSizeMB << 20
	if mem <= 0 {
		mem = cache.DefaultMemBudgetBytes
	}
	limit := mem + daemonOverheadBytes
	debug.SetMemoryLimit(limit)
	log.Debug("soft memory limit", "bytes", limit)
}

// The mount's read path hands fully cached files to the kernel.
var (
	_ fs.BackingOpener = (*cache.Reader)(nil)
	_ fs.BackingOpener = (*prefetch.Auto)(nil)
)
