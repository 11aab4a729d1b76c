// Package fs is the POSIX view of one Blob container, served through the
// kernel with go-fuse: Mount(ctx, dir, Options) returns a *Mounted, and
// Unmount ends it. The CLI, config files and daemonizing live elsewhere;
// this package is the library.
//
// # Layers
//
// go-fuse nodes (node.go) only translate: kernel request → Volume call →
// errno through the one error map (toErrno, errno.go). Volume (volume.go,
// file.go) owns the POSIX rules: names → attributes with TTL caches,
// directory listings, open handles and write sessions, rename rules. It
// has no FUSE types and is tested directly as well as through the kernel.
// Reads of committed blobs go through Options.Reader (default: the Store),
// the seam where the block cache slots in.
//
// # Namespace
//
// A path a/b/c is the blob "a/b/c". Directories are implicit (a prefix of
// other blobs) or explicit: a zero-length marker blob "a/b" with metadata
// hdi_isfolder=true, which is what mkdir writes (as BlobFuse2 does), so
// empty directories survive. A directory that is only implicit disappears
// when its last entry goes, as in BlobFuse2; rmdir of such a vanished
// directory succeeds. A blob whose name is also a prefix of other blobs is
// shown as a file and shadows that directory. Blob names no path can
// reach (empty, "." or ".." segments, segments over 255 bytes) are left
// out of listings and logged once. Symbolic links are blobs holding the
// target with metadata is_symlink=true, again BlobFuse2's format. Hard
// links, device nodes and xattrs are not supported: every xattr call
// fails with ENOTSUP, which ls, cp -a and shutil.copystat take as "no
// xattrs" (the kernel learns this from the first request and stops
// asking, which also saves a security.capability lookup per write).
//
// chmod, chown and utimes succeed and change nothing: owner and mode come
// from Options (UID, GID, Umask), times from LastModified. BlobFuse2 does
// the same on flat-namespace accounts. The mount uses default_permissions,
// so the kernel enforces those modes.
//
// # Consistency
//
//   - Attributes and lookups are cached for AttrTTL/EntryTTL (misses for
//     NegativeTTL, listings for DirListTTL), in the kernel and in Volume;
//     every change made through this mount updates or drops what it
//     touched, so create-then-stat and write-then-ls agree on one mount.
//     Changes by other clients show after the TTLs.
//   - A file opened for reading is read in ranges (one ranged read per
//     kernel request, never a whole-blob download for a small read),
//     pinned to the ETag seen at open (the attribute cache's, up to
//     AttrTTL old). If the blob has changed, reads fail with ESTALE
//     instead of mixing two versions; the next open sees the new one.
//     The kernel page cache is kept across opens of the same version
//     (FOPEN_KEEP_CACHE) and dropped otherwise.
//   - Writes go to a write session shared by all handles of the file: a
//     temporary file in StagingDir with the file's whole new content. A
//     write to an existing blob first copies the blob into it (parallel
//     ranged reads; lazily: only when first written, not at open).
//     O_TRUNC, truncate and ftruncate change the session's length.
//     Create makes an empty blob at once (IfNoneMatchAny, so O_EXCL holds
//     across mounts), as BlobFuse2 does.
//   - flush (every close), fsync and release upload a session that has
//     changed: one Put up to BlockSize, else blocks staged in parallel
//     under a fresh session id and one CommitBlocks, which replaces the
//     blob atomically. Durable when fsync or close returns success; an
//     upload error fails that close or fsync (the data stays local for a
//     retry until the last handle closes). Last writer wins across
//     clients, as in BlobFuse2.
//   - unlink of an open file keeps its handles working on local content
//     and never uploads it again.
//   - rename of a file is a server-side Copy pinned to the source ETag,
//     then a Delete pinned to the same ETag; Copy replaces the target
//     atomically, so write-x.tmp-then-rename-to-x (torch.save,
//     os.replace) gives readers the old or the new file. An open file with
//     unsaved data is uploaded under the new name instead.
//     RENAME_NOREPLACE is a conditional write (EEXIST). RENAME_EXCHANGE is
//     refused (EINVAL). Directory rename copies then deletes every blob
//     below: correct when it returns, not atomic, O(entries) requests.
//   - Mutations run to completion even if the caller is interrupted
//     (close(2) is never retried on EINTR, so an interrupted upload would
//     be lost data). Reads, lookups and listings stop with EINTR only when
//     the caller is being killed (SIGKILL, or a fatal SIGINT/SIGTERM): a
//     signal the program handles (the Go runtime's SIGURG, SIGCHLD) lets
//     them finish, as on a local disk, where stat(2) never fails with
//     EINTR. Options.InterruptOnAnySignal stops them on any signal.
//
// # Errors
//
// See toErrno for the full table. ErrStale is ESTALE; ErrThrottled,
// ErrUnavailable and ErrChecksum are EIO (the adapter already retried, and
// EAGAIN on a regular file reads as end-of-file to Python's buffered
// readers); ErrContainerNotFound is ENODEV (and Mount refuses a missing
// container up front); unknown errors are EIO, logged once per distinct
// message. toErrno never produces ENOSYS, which would make the kernel
// stop sending that operation for good; the only ENOSYS the kernel sees is
// the deliberate answer to the first xattr request (see Mount).
//
// # Locks
//
// Lock order: fileState.mu, then Volume.mu. Volume.mu guards only maps
// and counters and is never held across I/O; fileState.mu serializes one
// file's content changes and uploads (readers of local content share it;
// readers of a committed blob take it only to read the pin, so any number
// of concurrent readers, e.g. DataLoader workers, proceed in parallel).
// When several fileState locks are needed (rename takes source and
// target; a directory rename, every open file below it; unlink, one) they
// are taken in fileState id order (creation order), and each name is
// re-checked once its lock is held.
package fs
