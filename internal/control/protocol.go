// Package control is the protocol a running mount is driven with:
// prefetch paths or the newest checkpoint, report how much is cached,
// evict, pin and unpin. It has no FUSE in it; the same byte stream is
// carried by two transports:
//
//   - a unix socket (mode 0600, see DefaultSocketPath) for node-level
//     tools running as root;
//   - a control file inside the mount (fs.ControlName, ".blobfs-control" at
//     the mount's root), for a pod that only has the volume: an init
//     container or a non-root job. Anyone who may use the mount may use it:
//     every operation only touches data the mount's own identity reads.
//     OpenFile opens it read-only and sends the request by ioctl
//     (IoctlWriteCmd), which read-only mounts allow; OpenFileWrite opens
//     it read-write and writes the request. The answer is read either way.
//
// # Wire format
//
// The client writes one Request as a JSON object on one line. The server
// answers with Events, one JSON object per line: progress while it works,
// then exactly one final event (Type "done" or "error"), then end of
// stream. A second line from the client, or the client hanging up, cancels
// the operation; what was fetched stays cached (the cache's blocks are
// immutable, so a cancelled prefetch leaves nothing half-written behind).
package control

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Operations.
const (
	// OpPrefetch fills the cache with Paths (files, directories, globs) in
	// the order given, or with the newest complete checkpoint under
	// Checkpoint.
	OpPrefetch = "prefetch"
	// OpStatus reports per path how much is cached (Paths may be empty:
	// only the cache's counters).
	OpStatus = "status"
	// OpEvict drops Paths' cached blocks, pinned ones included.
	OpEvict = "evict"
	// OpUnpin makes Paths' blocks evictable again. (Pinning is OpPrefetch
	// with Pin: a pin needs the bytes.)
	OpUnpin = "unpin"
)

// Priorities of a prefetch: when several prefetches share the mount's
// fetch slots, a higher one gets the next free slot first.
const (
	PriorityLow    = "low" // background work: automatic prefetch
	PriorityNormal = "normal"
	PriorityHigh   = "high" // a job waits on it: checkpoint restore
)

// Request is one operation. Paths are slash-separated, relative to the
// mount's root (no leading slash); a path may be a glob (path.Match
// syntax, one segment at a time: 'train/shard-0*.tar').
type Request struct {
	Op    string   `json:"op"`
	Paths []string `json:"paths,omitempty"`
	// Checkpoint, for OpPrefetch and OpStatus: a directory whose newest
	// complete checkpoint is meant, read by rank Rank of WorldSize.
	Checkpoint string `json:"checkpoint,omitempty"`
	Rank       int    `json:"rank,omitempty"`
	WorldSize  int    `json:"world_size,omitempty"`
	// Parallel bounds the ranges fetched at once (0: the server's default).
	Parallel int `json:"parallel,omitempty"`
	// Pin keeps what is fetched from eviction until unpinned or evicted.
	Pin bool `json:"pin,omitempty"`
	// MaxBandwidth caps the fetch rate in bytes per second; 0: none.
	MaxBandwidth uint64 `json:"max_bandwidth,omitempty"`
	// Priority is PriorityLow, PriorityNormal (empty) or PriorityHigh.
	Priority string `json:"priority,omitempty"`
}

// ErrBadRequest marks a request the server refuses as malformed.
var ErrBadRequest = errors.New("bad control request")

// Validate checks the request without touching anything.
func (r Request) Validate() error {
	var errs []error
	switch r.Op {
	case OpPrefetch, OpStatus:
	case OpEvict, OpUnpin:
		if r.Checkpoint != "" {
			errs = append(errs, fmt.Errorf("%s takes paths, not a checkpoint", r.Op))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown op %q", r.Op))
	}
	if r.Op != OpStatus && len(r.Paths) == 0 && r.Checkpoint == "" {
		errs = append(errs, fmt.Errorf("%s: no paths", r.Op))
	}
	for _, p := range r.Paths {
		if err := checkPath(p); err != nil {
			errs = append(errs, err)
			break
		}
	}
	if r.Checkpoint != "" {
		if err := checkPath(r.Checkpoint); err != nil {
			errs = append(errs, err)
		}
	}
	if r.WorldSize < 0 || r.Rank < 0 || (r.WorldSize <= 1 && r.Rank > 0) || (r.WorldSize > 1 && r.Rank >= r.WorldSize) {
		errs = append(errs, fmt.Errorf("rank %d of world size %d", r.Rank, r.WorldSize))
	}
	if r.Parallel < 0 || r.Parallel > 1024 {
		errs = append(errs, fmt.Errorf("parallel %d: want 0..1024", r.Parallel))
	}
	switch r.Priority {
	case "", PriorityLow, PriorityNormal, PriorityHigh:
	default:
		errs = append(errs, fmt.Errorf("priority %q: want low, normal or high", r.Priority))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
}

// checkPath accepts "" (the root) and clean relative paths.
func checkPath(p string) error {
	if p == "" {
		return nil
	}
	if strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("path %q: want a clean path relative to the mount's root", p)
	}
	return nil
}

// Event types.
const (
	EventPlan     = "plan"     // what will be fetched: totals, the checkpoint chosen
	EventProgress = "progress" // periodic counters
	EventDone     = "done"     // final: success (Status filled for OpStatus)
	EventError    = "error"    // final: failure
)

// Error codes, so a client can map failures to exit codes without parsing
// messages.
const (
	CodeNotFound     = "not_found"     // a path or checkpoint does not exist
	CodeNoCheckpoint = "no_checkpoint" // nothing complete under Checkpoint
	CodeBadRequest   = "bad_request"
	CodeCanceled     = "canceled"
	CodeNoSpace      = "no_space" // the cache could not hold (or pin) it
	CodeFailed       = "failed"
)

// Event is one line of the server's answer.
type Event struct {
	Type string `json:"type"`
	// Progress: counters so far (final events carry the last ones).
	Progress *Progress `json:"progress,omitempty"`
	// Checkpoint describes the checkpoint chosen (plan event).
	Checkpoint *CheckpointInfo `json:"checkpoint,omitempty"`
	// Files lists per-path results (OpStatus; OpPrefetch's done event
	// lists failures only).
	Files []FileStatus `json:"files,omitempty"`
	// Cache holds the cache's counters (OpStatus).
	Cache *CacheStats `json:"cache,omitempty"`
	// Error and Code explain an error event.
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// Final reports whether e ends the stream.
func (e Event) Final() bool { return e.Type == EventDone || e.Type == EventError }

// Progress counts a prefetch's work. Bytes are planned bytes (ranges),
// not block-rounded.
type Progress struct {
	TotalFiles int   `json:"total_files"`
	TotalBytes int64 `json:"total_bytes"`
	DoneFiles  int   `json:"done_files"`
	DoneBytes  int64 `json:"done_bytes"`
	// CachedBytes of DoneBytes were on disk already and needed no fetch.
	CachedBytes int64 `json:"cached_bytes"`
	FailedFiles int   `json:"failed_files"`
	// ElapsedMS since the operation started.
	ElapsedMS int64 `json:"elapsed_ms"`
}

// CheckpointInfo is the checkpoint a prefetch chose.
type CheckpointInfo struct {
	Path    string `json:"path"`
	Layout  string `json:"layout"`
	Content string `json:"content,omitempty"`
	Step    int64  `json:"step"`
	Files   int    `json:"files"`
	// Bytes is the checkpoint's size; Planned what this rank reads of it.
	Bytes   int64 `json:"bytes"`
	Planned int64 `json:"planned"`
	// Skipped names newer checkpoints that are not complete, with why.
	Skipped []string `json:"skipped,omitempty"`
}

// FileStatus is one file's cache state, or why it failed.
type FileStatus struct {
	Path        string `json:"path"`
	Size        int64  `json:"size"`
	CachedBytes int64  `json:"cached_bytes"`
	PinnedBytes int64  `json:"pinned_bytes,omitempty"`
	// Error is set when the file could not be handled.
	Error string `json:"error,omitempty"`
}

// Percent is the share of the file's bytes in the cache, 0..100.
func (f FileStatus) Percent() float64 {
	if f.Size == 0 {
		return 100
	}
	return 100 * float64(f.CachedBytes) / float64(f.Size)
}

// CacheStats are the mount's cache counters.
type CacheStats struct {
	DiskUsed   int64 `json:"disk_used"`
	DiskBudget int64 `json:"disk_budget"`
	// Hits and Misses count blocks served by this mount since it started.
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// InflightBlocks are blocks being fetched from the backend now;
	// Prefetches the prefetch operations running now (explicit and
	// automatic).
	InflightBlocks int `json:"inflight_blocks"`
	Prefetches     int `json:"prefetches"`
	// PrefetchedBytes were fetched by prefetch; WastedBytes of them were
	// evicted before anyone read them.
	PrefetchedBytes uint64 `json:"prefetched_bytes"`
	WastedBytes     uint64 `json:"wasted_bytes"`
}

// HitRatio is Hits / (Hits + Misses), or 0 before any read.
func (s CacheStats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}
