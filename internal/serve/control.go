package serve

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/cache"
	"github.com/blobfs/blobfs/fs"
	"github.com/blobfs/blobfs/internal/backend"
	"github.com/blobfs/blobfs/internal/config"
	"github.com/blobfs/blobfs/internal/control"
	"github.com/blobfs/blobfs/internal/metrics"
	"github.com/blobfs/blobfs/prefetch"
)

// newRunner is the mount's prefetch runner: it fills the cache through
// the mount's own read path (cr), so prefetched blocks are exactly what
// reads find.
func newRunner(cfg config.Mount, store blob.Store, cr *cache.Reader, names prefetch.Names, reg prometheus.Registerer, log *slog.Logger) (*prefetch.Runner, error) {
	c := cr.Cache()
	pm, err := metrics.NewPrefetch(reg,
		func() uint64 { return c.PrefetchStats().FetchedBytes },
		func() uint64 { return c.PrefetchStats().WastedBytes })
	if err != nil {
		return nil, err
	}
	return prefetch.NewRunner(prefetch.Target{
		Store: store, Names: names, Reader: cr, Logger: log, Metrics: pm,
		// Prefetches share the cache's backend concurrency, highest
		// priority first (a restore before background warm-up).
		DefaultParallel: cfg.Cache.Parallelism, MaxSlots: cfg.Cache.Parallelism,
	}), nil
}

// ControlSocketPath is where the mount at mountpoint listens for node
// tools by default: /run/blobfs/ as root, else the cache directory.
func ControlSocketPath(mountpoint string, cfg config.Mount) string {
	if os.Geteuid() == 0 {
		return control.DefaultSocketPath(mountpoint)
	}
	return filepath.Join(cfg.Cache.Dir, "control", control.SocketName(mountpoint))
}

// serveControl answers the mount's control file and its control socket
// with runner. The returned func stops the socket and removes it.
func serveControl(ctx context.Context, m *fs.Mounted, mp string, cfg config.Mount, opts Options, runner *prefetch.Runner, names *volumeNames, log *slog.Logger) func() {
	names.v = m.Volume()
	m.ServeControl(func(ctx context.Context, conn io.ReadWriter) {
		control.ServeConn(ctx, runner, conn, log)
	})
	path := opts.ControlSocket
	if path == "none" {
		return func() {}
	}
	if path == "" {
		path = ControlSocketPath(mp, cfg)
	}
	sock, err := control.ListenSocket(ctx, path, runner, log)
	if err != nil {
		// The control file still works; node tools are told why not here.
		log.Warn("no control socket", "err", err)
		return func() {}
	}
	log.Info("control socket", "path", sock.Path())
	return func() { sock.Close() }
}

// CacheConfig is the node cache configuration a mount with cfg uses; the
// standalone `blobfs prefetch` opens the same, so a later mount reuses
// what it filled.
func CacheConfig(cfg config.Mount, log *slog.Logger, reg prometheus.Registerer) cache.Config {
	return cacheConfig(cfg, log, reg)
}

// NewCacheReader is the read path over b's store a mount with cfg uses:
// the cache keys by full blob names (a subdirectory mount reads through
// the prefixed view, so its names are made whole again here) and by the
// credential's identity.
func NewCacheReader(c *cache.Cache, b *backend.Backend, store blob.Store, cfg config.Mount, log *slog.Logger) *cache.Reader {
	return cache.NewReader(c, store, cache.ReaderOptions{
		Account: b.Account, Container: b.Container, KeyPrefix: keyPrefix(cfg.Storage.Subdirectory),
		Identity:       b.Credential.Describe(),
		ReadaheadBytes: int64(cfg.Cache.Prefetch) * cfg.Cache.BlockSizeMB << 20,
		FetchAtOpen:    cfg.Cache.FetchAtOpenMB << 20,
		Logger:         log,
	})
}

// volumeNames resolves prefetch paths through the mounted volume: the
// names, versions and attribute caches the mount's reads use, so that
// what is prefetched is keyed as those reads will look for it. v is set
// once the mount is up, before the control channel opens.
type volumeNames struct{ v *fs.Volume }

var _ prefetch.Names = (*volumeNames)(nil)

func (n *volumeNames) node(name string, e fs.Entry) prefetch.Node {
	nd := prefetch.Node{Name: name, Dir: e.Dir}
	if !e.Dir && !e.Symlink {
		nd.File = prefetch.File{Name: name, ETag: e.ETag, Size: e.Size}
	}
	return nd
}

// Stat implements prefetch.Names.
func (n *volumeNames) Stat(ctx context.Context, name string) (prefetch.Node, error) {
	e, err := n.v.Lookup(ctx, name)
	if err != nil {
		return prefetch.Node{}, err
	}
	return n.node(name, e), nil
}

// ReadDir implements prefetch.Names.
func (n *volumeNames) ReadDir(ctx context.Context, dir string) ([]prefetch.Node, error) {
	ents, err := n.v.ReadDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := make([]prefetch.Node, 0, len(ents))
	for _, e := range ents {
		name := e.Name
		if dir != "" {
			name = dir + "/" + e.Name
		}
		out = append(out, n.node(name, e.Entry))
	}
	return out, nil
}

// autoPrefetch puts automatic prefetch (prefetch.Auto) in front of the
// mount's read path, unless opts turn both kinds off. The returned func
// stops what it started.
func autoPrefetch(fo *fs.Options, cr *cache.Reader, runner *prefetch.Runner, opts Options) func() {
	ao := prefetch.DefaultAutoOptions()
	if opts.AutoPrefetch != nil {
		ao = *opts.AutoPrefetch
	}
	if ao.CheckpointFraction <= 0 && ao.NextShards <= 0 {
		return func() {}
	}
	if ao.RankOf == nil {
		ao.RankOf = callerRank
	}
	a := prefetch.NewAuto(cr, runner, ao)
	fo.Reader = a
	return a.Close
}

// callerRank reads RANK and WORLD_SIZE (set by torchrun, Ray Train and
// DeepSpeed's launcher) from the environment of the process whose read
// is in ctx. The daemon runs as root; a pid it cannot read (another pid
// namespace) simply plans the whole checkpoint.
func callerRank(ctx context.Context) (rank, world int, ok bool) {
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Pid == 0 {
		return 0, 0, false
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", caller.Pid))
	if err != nil {
		return 0, 0, false
	}
	vals := map[string]int{}
	for _, kv := range bytes.Split(env, []byte{0}) {
		k, v, found := strings.Cut(string(kv), "=")
		if !found || (k != "RANK" && k != "WORLD_SIZE") {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, 0, false
		}
		vals[k] = n
	}
	r, okR := vals["RANK"]
	w, okW := vals["WORLD_SIZE"]
	return r, w, okR && okW
}
