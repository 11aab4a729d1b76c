package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/blobfs/blobfs/cache"
	"github.com/blobfs/blobfs/internal/backend"
	"github.com/blobfs/blobfs/internal/control"
	"github.com/blobfs/blobfs/internal/mountinfo"
	"github.com/blobfs/blobfs/internal/serve"
	"github.com/blobfs/blobfs/prefetch"
)

// Exit codes of `blobfs prefetch` besides ExitOK, ExitError, ExitUsage.
const (
	ExitNotCached   = 3   // --check: something is not fully cached
	ExitNotFound    = 4   // nothing matched, or no complete checkpoint
	ExitInterrupted = 130 // Ctrl-C (128 + SIGINT), as shells report it
)

// exitError is an error with its own exit code.
type exitError struct {
	err  error
	code int
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode implements the exit-code convention.
func (e *exitError) ExitCode() int { return e.code }

// doFunc runs one control request: against a mount, or in-process.
type doFunc func(ctx context.Context, req control.Request, onEvent func(control.Event)) (control.Event, error)

// runPrefetch prefetches, checks, evicts or unpins.
func runPrefetch(ctx context.Context, d *Deps, o PrefetchOptions) error {
	req := control.Request{
		Op: control.OpPrefetch, Rank: o.Rank, WorldSize: o.WorldSize,
		Parallel: o.Parallel, Pin: o.Pin, MaxBandwidth: o.MaxBandwidth, Priority: control.PriorityNormal,
	}
	switch {
	case o.Check:
		req.Op = control.OpStatus
	case o.Evict:
		req.Op = control.OpEvict
	case o.Unpin:
		req.Op = control.OpUnpin
	}
	if o.Checkpoint != "" {
		req.Priority = control.PriorityHigh // a restarting job waits on it
	}
	if o.Priority != "" {
		req.Priority = o.Priority
	}
	paths := o.Paths
	if o.Manifest != "" {
		m, err := readManifest(o.Manifest)
		if err != nil {
			return err
		}
		paths = append(paths, m...)
	}
	var do doFunc
	if o.Standalone {
		req.Paths, req.Checkpoint = cleanRel(paths), cleanRelOne(o.Checkpoint)
		closeFn, f, err := standalone(ctx, d, o)
		if err != nil {
			return err
		}
		defer closeFn()
		do = f
	} else {
		mp, rel, err := locate(append(slicesClone(paths), nonEmpty(o.Checkpoint)...), o.Socket != "")
		if err != nil {
			return usageError(err)
		}
		if o.Checkpoint != "" {
			req.Checkpoint, rel = rel[len(rel)-1], rel[:len(rel)-1]
		}
		req.Paths = rel
		do = func(ctx context.Context, req control.Request, onEvent func(control.Event)) (control.Event, error) {
			var conn io.ReadWriteCloser
			var err error
			if o.Socket != "" {
				conn, err = control.DialSocket(ctx, o.Socket)
			} else {
				// By ioctl on a read-only open: a pod's readOnly
				// volumeMount allows that.
				conn, err = control.OpenFile(mp)
				if errors.Is(err, syscall.EROFS) {
					// Only a mount whose blobfs predates the ioctl
					// transport falls back to a read-write open.
					err = fmt.Errorf("%w: the blobfs serving this mount takes requests only on a read-write open; upgrade it, or as root use the mount's control socket (--socket)", err)
				}
			}
			if err != nil {
				return control.Event{}, err
			}
			return control.Do(ctx, conn, req, onEvent)
		}
	}
	if err := req.Validate(); err != nil {
		return usageError(err)
	}
	var bar *progressBar
	if req.Op == control.OpPrefetch {
		bar = newProgressBar(d.Stderr, o.ProgressEvery)
	}
	final, err := do(ctx, req, func(e control.Event) {
		if e.Checkpoint != nil && e.Type == control.EventPlan {
			bar.clear()
			printCheckpoint(d.Stdout, e.Checkpoint, o)
		}
		if e.Progress != nil {
			bar.update(*e.Progress)
		}
	})
	bar.finish(final.Progress)
	if err != nil && final.Type == "" {
		if errors.Is(err, context.Canceled) {
			return &exitError{fmt.Errorf("interrupted: %w", err), ExitInterrupted}
		}
		if errors.Is(err, control.ErrBadRequest) { // refused before it was sent: too long
			return usageError(err)
		}
		return err
	}
	return report(d, o, req, final)
}

// report prints the final event and turns it into the exit status.
func report(d *Deps, o PrefetchOptions, req control.Request, e control.Event) error {
	if e.Checkpoint != nil && req.Op == control.OpStatus {
		printCheckpoint(d.Stdout, e.Checkpoint, o)
	}
	w := d.Stdout
	switch req.Op {
	case control.OpStatus:
		var total, cached int64
		notCached := false
		for _, f := range e.Files {
			if f.Error != "" {
				fmt.Fprintf(w, "  error   %s\n", f.Error)
				continue
			}
			total += f.Size
			cached += f.CachedBytes
			if f.CachedBytes < f.Size {
				notCached = true
			}
			pin := ""
			if f.PinnedBytes > 0 {
				pin = "  pinned"
			}
			fmt.Fprintf(w, "%6.2f%%  %d/%d bytes  %s%s\n", f.Percent(), f.CachedBytes, f.Size, f.Path, pin)
		}
		if len(e.Files) > 0 {
			pct := 100.0
			if total > 0 {
				pct = 100 * float64(cached) / float64(total)
			}
			fmt.Fprintf(w, "total: %.2f%% cached, %d of %d bytes (%s of %s) in %d files\n",
				pct, cached, total, humanize.IBytes(uint64(cached)), humanize.IBytes(uint64(total)), len(e.Files))
		}
		if c := e.Cache; c != nil {
			fmt.Fprintf(w, "cache: hit ratio %.1f%% (%d hits, %d misses), %d blocks in flight, %d prefetches running, %s of %s used, prefetched %s (%s evicted unread)\n",
				100*c.HitRatio(), c.Hits, c.Misses, c.InflightBlocks, c.Prefetches,
				humanize.IBytes(uint64(c.DiskUsed)), humanize.IBytes(uint64(c.DiskBudget)),
				humanize.IBytes(c.PrefetchedBytes), humanize.IBytes(c.WastedBytes))
		}
		if e.Type == control.EventDone && notCached {
			return &exitError{errors.New("not everything is cached"), ExitNotCached}
		}
	case control.OpPrefetch:
		if p := e.Progress; p != nil {
			secs := float64(p.ElapsedMS) / 1000
			rate := ""
			if secs > 0 {
				rate = fmt.Sprintf(", %s/s", humanize.IBytes(uint64(float64(p.DoneBytes-p.CachedBytes)/secs)))
			}
			verb := "prefetched"
			if o.Pin {
				verb = "prefetched and pinned"
			}
			fmt.Fprintf(w, "%s %d of %d files, %s of %s (%s were cached already) in %.1fs%s\n",
				verb, p.DoneFiles, p.TotalFiles, humanize.IBytes(uint64(p.DoneBytes)), humanize.IBytes(uint64(p.TotalBytes)),
				humanize.IBytes(uint64(p.CachedBytes)), secs, rate)
		}
	case control.OpEvict, control.OpUnpin:
		if p := e.Progress; p != nil {
			verb := map[string]string{control.OpEvict: "evicted", control.OpUnpin: "unpinned"}[req.Op]
			fmt.Fprintf(w, "%s %d files (%s)\n", verb, p.DoneFiles, humanize.IBytes(uint64(p.DoneBytes)))
		}
	}
	if e.Type != control.EventError {
		return nil
	}
	err := errors.New(e.Error)
	switch e.Code {
	case control.CodeCanceled:
		return &exitError{fmt.Errorf("interrupted; what was fetched stays cached: %w", err), ExitInterrupted}
	case control.CodeNotFound, control.CodeNoCheckpoint:
		return &exitError{err, ExitNotFound}
	case control.CodeBadRequest:
		return usageError(err)
	}
	return err
}

func printCheckpoint(w io.Writer, ck *control.CheckpointInfo, o PrefetchOptions) {
	for _, s := range ck.Skipped {
		fmt.Fprintf(w, "skipped: %s\n", s)
	}
	if ck.Path == "" {
		return
	}
	step := ""
	if ck.Step >= 0 {
		step = fmt.Sprintf(" (step %d)", ck.Step)
	}
	fmt.Fprintf(w, "checkpoint: %s %s%s, %d files, %s; rank %d of %d reads %s\n",
		ck.Layout, ck.Path, step, ck.Files, humanize.IBytes(uint64(ck.Bytes)), o.Rank, o.WorldSize, humanize.IBytes(uint64(ck.Planned)))
}

// readManifest reads one path per line; blank lines and # comments are
// skipped.
func readManifest(name string) ([]string, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		defer f.Close()
		r = f
	}
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, usageErrorf("manifest %s lists no paths", name)
	}
	return out, nil
}

// locate finds the blobfs mount holding every path and returns its
// mountpoint and the paths relative to it. With viaSocket a path outside
// any visible mount is taken as relative to the mount's root already (a
// node tool may not see the mount).
func locate(paths []string, viaSocket bool) (string, []string, error) {
	mounts, err := mountinfo.Read()
	if err != nil && !viaSocket {
		return "", nil, err
	}
	mp := ""
	rel := make([]string, len(paths))
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", nil, err
		}
		m, ok := blobfsMountOf(mounts, abs)
		if !ok {
			if viaSocket && !filepath.IsAbs(p) {
				rel[i] = cleanRelOne(p)
				continue
			}
			return "", nil, fmt.Errorf("%s is not inside a blobfs mount", p)
		}
		if mp != "" && m != mp {
			return "", nil, fmt.Errorf("%s and %s are in different mounts (%s, %s): prefetch one mount at a time", paths[0], p, mp, m)
		}
		mp = m
		r, _ := filepath.Rel(m, abs)
		if r == "." {
			r = ""
		}
		rel[i] = filepath.ToSlash(r)
	}
	return mp, rel, nil
}

// blobfsMountOf returns the innermost blobfs mount holding abs.
func blobfsMountOf(mounts []mountinfo.Mount, abs string) (string, bool) {
	best := ""
	for _, m := range mounts {
		if m.FSType != "fuse.blobfs" {
			continue
		}
		if abs == m.Point || strings.HasPrefix(abs, strings.TrimSuffix(m.Point, "/")+"/") {
			if len(m.Point) > len(best) {
				best = m.Point
			}
		}
	}
	return best, best != ""
}

func cleanRel(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = cleanRelOne(p)
	}
	return out
}

// cleanRelOne turns a user's path inside the container into the protocol's
// form: slash-separated, no leading slash, "" for the root.
func cleanRelOne(p string) string {
	p = strings.Trim(filepath.ToSlash(filepath.Clean("/"+p)), "/")
	return p
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// standalone opens the container and the node cache directory the way
// 'blobfs mount' does, and runs requests in-process.
func standalone(ctx context.Context, d *Deps, o PrefetchOptions) (func(), doFunc, error) {
	cfg := o.Config
	b, err := backend.Open(ctx, cfg.Storage, backend.Options{Logger: d.Logger, DisableRangeChecksums: !cfg.Storage.VerifyReads})
	if err != nil {
		return nil, nil, err
	}
	c, err := cache.Open(ctx, serve.CacheConfig(cfg, d.Logger, nil))
	if err != nil {
		return nil, nil, fmt.Errorf("block cache in %s: %w", cfg.Cache.Dir, err)
	}
	cr := serve.NewCacheReader(c, b, b.Store, cfg, d.Logger)
	r := prefetch.NewRunner(prefetch.Target{Store: b.Store, Reader: cr, Logger: d.Logger, DefaultParallel: o.Parallel})
	closeFn := func() {
		cr.Close()
		if err := c.Close(); err != nil {
			d.Logger.Warn("closing the cache", "err", err)
		}
	}
	return closeFn, func(ctx context.Context, req control.Request, onEvent func(control.Event)) (control.Event, error) {
		final := r.Handle(ctx, req, onEvent)
		return final, ctx.Err()
	}, nil
}
