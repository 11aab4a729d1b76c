package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// Reader reads committed blob content. It is the read-path seam: the
// default is the Store itself, and the block cache (package cache) slots in
// here without fs changing. Implementations must honour etag exactly as
// blob.Store.ReadAt does: a non-empty etag pins the read, and a blob that
// has changed yields blob.ErrStale and no bytes of the new version.
type Reader interface {
	ReadAt(ctx context.Context, name string, etag blob.ETag, p []byte, off int64) (int, error)
}

// SizedReader is a Reader that is also told the size of the version it
// reads. The block cache keys its files by (blob, ETag, size), so the
// volume, which knows the size from its listing, passes it instead of the
// cache asking the service again. The volume prefers it when a Reader
// implements it.
type SizedReader interface {
	ReadAtSized(ctx context.Context, name string, etag blob.ETag, size int64, p []byte, off int64) (int, error)
}

// Options configure a Volume and its mount. Start from DefaultOptions: the
// zero value of a duration or of Umask is meaningful (no caching, mode
// 0777), so only fields whose zero value means nothing (MaxWrite,
// MaxBackground, BlockSize, Concurrency, StagingDir, StatfsDir, FSName,
// Logger, Reader) are defaulted when left zero.
type Options struct {
	// Store is the container to mount. Required.
	Store blob.Store
	// Reader serves reads of committed blobs. Nil means Store.
	Reader Reader

	// ReadOnly mounts read-only (MS_RDONLY); every mutation fails with EROFS.
	ReadOnly bool

	// UID and GID own every file and directory. Ray images run as uid
	// 1000; the mount is made with default_permissions, so the kernel
	// checks these and the mode bits.
	UID, GID uint32
	// Umask is cleared from 0666 (files) and 0777 (directories).
	Umask uint32
	// AllowOther lets users other than the mounting one use the mount.
	AllowOther bool

	// AttrTTL is how long the kernel and the volume trust a name's
	// attributes; EntryTTL how long the kernel trusts a name→inode
	// binding; NegativeTTL how long a missing name stays missing;
	// DirListTTL how long a directory listing is reused. Our own writes
	// invalidate what they change. Defaults match BlobFuse2 (120 s).
	AttrTTL, EntryTTL, NegativeTTL, DirListTTL time.Duration

	// MaxWrite is the largest FUSE read/write request (default 1 MiB; the
	// kernel caps it at /proc/sys/fs/fuse/max_pages_limit pages).
	MaxWrite int
	// MaxBackground is the kernel's limit on outstanding asynchronous
	// requests (readahead, direct I/O). go-fuse only defaults it when it
	// gets no options at all, so it is always set explicitly (default 64).
	MaxBackground int
	// MaxReadAhead can only lower the kernel's readahead; zero keeps it.
	MaxReadAhead int
	// ReadAheadKB, when positive, is written to the mount's
	// /sys/class/bdi/<dev>/read_ahead_kb after mounting: the only way to
	// raise readahead above 128 KiB. Default 4096; zero leaves the kernel's.
	ReadAheadKB int

	// BlockSize is the upload block size and the chunk size for copying
	// an existing blob into a write session (default 8 MiB). Files up to
	// BlockSize are uploaded with one Put.
	BlockSize int64
	// Concurrency bounds parallel block uploads and chunk fetches per file
	// (default 8). A sequential writer's full blocks are staged in the
	// background as it writes, at most Concurrency at a time; a write
	// that would start one more waits, so a file's upload buffers never
	// exceed Concurrency × BlockSize.
	Concurrency int
	// UploadTimeout bounds one commit (flush, fsync, close) and one
	// background block upload, retries included: a dead backend fails
	// them with EIO after this long instead of hanging the application.
	// Zero means no bound beyond the store's own retry policy.
	UploadTimeout time.Duration
	// MaxRenameDirEntries is the largest directory (blobs under it) a
	// rename moves, one server-side copy each; larger ones fail with
	// EXDEV, which makes mv(1) fall back to copying. Zero means
	// DefaultMaxRenameDirEntries; negative means no limit.
	MaxRenameDirEntries int

	// StagingDir holds write sessions' temporary files (default
	// os.TempDir()). Each mount makes its own subdirectory.
	StagingDir string
	// StatfsDir is the directory whose filesystem statfs reports, so that
	// free-space checks (HF datasets) see the local cache disk. Default
	// StagingDir.
	StatfsDir string

	// FSName is the source shown in /proc/mounts (default "blobfs").
	FSName string
	// Logger receives warnings and errors (default slog.Default()).
	Logger *slog.Logger
	// Debug logs every FUSE request and reply (go-fuse debug output).
	Debug bool

	// Passthrough says when a file the Reader holds whole is handed to
	// the kernel at open (FUSE passthrough, passthrough.go). Default
	// PassthroughAuto: on read-only mounts.
	Passthrough PassthroughMode
	// DirectIO bypasses the kernel page cache (FOPEN_DIRECT_IO): every
	// read and write reaches the daemon. It turns passthrough off.
	DirectIO bool
	// InterruptOnAnySignal stops a read, lookup or listing with EINTR when
	// its caller gets any signal. By default only a caller being killed
	// stops one (fs/interrupt.go): most signals are harmless (the Go
	// runtime's SIGURG), and programs do not retry stat(2) on EINTR.
	// gcsfuse's --ignore-interrupts=false.
	InterruptOnAnySignal bool
}

// Defaults, exported so the CLI can print them.
const (
	DefaultTTL           = 120 * time.Second
	DefaultMaxWrite      = 1 << 20
	DefaultMaxBackground = 64
	DefaultReadAheadKB   = 4096
	DefaultBlockSize     = 8 << 20
	DefaultConcurrency   = 8
	DefaultUploadTimeout = 5 * time.Minute
	// DefaultMaxRenameDirEntries: BlobFuse2 has no limit; 10,000 copies
	// take minutes, past which rename's atomic look is a lie worth
	// refusing.
	DefaultMaxRenameDirEntries = 10000
	DefaultUmask               = 0o022
	DefaultFSName              = "blobfs"
)

// DefaultOptions returns the recommended options: owner is the calling
// process, umask 022, BlobFuse2's 120 s caches, 1 MiB requests. Store must
// still be set.
func DefaultOptions() Options {
	return Options{
		UID:           uint32(os.Getuid()),
		GID:           uint32(os.Getgid()),
		Umask:         DefaultUmask,
		AttrTTL:       DefaultTTL,
		EntryTTL:      DefaultTTL,
		NegativeTTL:   DefaultTTL,
		DirListTTL:    DefaultTTL,
		MaxWrite:      DefaultMaxWrite,
		MaxBackground: DefaultMaxBackground,
		ReadAheadKB:   DefaultReadAheadKB,
		BlockSize:     DefaultBlockSize,
		Concurrency:   DefaultConcurrency,
		UploadTimeout: DefaultUploadTimeout,
		FSName:        DefaultFSName,
	}
}

// withDefaults fills the fields whose zero value has no meaning.
func (o Options) withDefaults() Options {
	if o.Reader == nil && o.Store != nil {
		o.Reader = o.Store
	}
	if o.MaxWrite == 0 {
		o.MaxWrite = DefaultMaxWrite
	}
	if o.MaxBackground == 0 {
		o.MaxBackground = DefaultMaxBackground
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxRenameDirEntries == 0 {
		o.MaxRenameDirEntries = DefaultMaxRenameDirEntries
	}
	if o.StagingDir == "" {
		o.StagingDir = os.TempDir()
	}
	if o.StatfsDir == "" {
		o.StatfsDir = o.StagingDir
	}
	if o.FSName == "" {
		o.FSName = DefaultFSName
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports what is wrong with o as Mount would use it (zero values
// that have defaults are fine). It does no I/O.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if o.Store == nil {
		bad("Store is required")
	}
	if o.Umask > 0o777 {
		bad("Umask %#o has bits outside 0777", o.Umask)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"AttrTTL", o.AttrTTL}, {"EntryTTL", o.EntryTTL}, {"NegativeTTL", o.NegativeTTL}, {"DirListTTL", o.DirListTTL}} {
		if d.v < 0 {
			bad("%s %v is negative", d.name, d.v)
		}
	}
	if o.MaxWrite < 4096 || o.MaxWrite > 16<<20 {
		bad("MaxWrite %d outside [4096, 16 MiB]", o.MaxWrite)
	}
	if o.MaxBackground < 1 || o.MaxBackground > 65535 {
		bad("MaxBackground %d outside [1, 65535]", o.MaxBackground)
	}
	if o.MaxReadAhead < 0 {
		bad("MaxReadAhead %d is negative", o.MaxReadAhead)
	}
	if o.ReadAheadKB < 0 {
		bad("ReadAheadKB %d is negative", o.ReadAheadKB)
	}
	if o.BlockSize < 4096 || o.BlockSize > blob.MaxBlockSize {
		bad("BlockSize %d outside [4096, %d]", o.BlockSize, blob.MaxBlockSize)
	}
	if o.UploadTimeout < 0 {
		bad("UploadTimeout %v is negative", o.UploadTimeout)
	}
	if o.Concurrency < 1 || o.Concurrency > 256 {
		bad("Concurrency %d outside [1, 256]", o.Concurrency)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fs options: %w", err)
	}
	return nil
}
