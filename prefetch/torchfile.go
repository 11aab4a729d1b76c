package prefetch

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"path"
	"strings"
)

// torch.save (PyTorch >= 1.6) writes a zip archive; the archive's end
// record is the last thing written, so a file that starts like a zip but
// does not end with one is a save that has not finished. torch never writes
// an archive comment, so the record is exactly the last 22 bytes; we still
// accept a comment (any zip) by scanning the tail.
var (
	zipLocalHeader = []byte("PK\x03\x04")
	zipEndRecord   = []byte("PK\x05\x06")
)

const (
	zipEndLen     = 22
	zipMaxComment = 0xffff
)

// isTorchFile reports whether name is, by its extension, a file written
// with torch.save (or another zip/pickle writer) that checkTorchFile can
// vet.
func isTorchFile(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".pt", ".pth", ".bin", ".ckpt", ".tar":
		return true
	}
	return false
}

// checkTorchFile returns ErrIncomplete for an empty file or a zip archive
// without its end record. Files in the legacy (pre-1.6) torch.save format
// are pickles followed by raw storages with no trailer, so for them only
// non-emptiness can be checked.
func checkTorchFile(ctx context.Context, t Tree, f Entry) error {
	if f.Size == 0 {
		return fmt.Errorf("%s: empty: %w", f.Name, ErrIncomplete)
	}
	if f.Size < int64(len(zipLocalHeader)) {
		return nil
	}
	head, err := readExact(ctx, t, f.Name, 0, int64(len(zipLocalHeader)))
	if err != nil {
		return err
	}
	if !bytes.Equal(head, zipLocalHeader) {
		return nil
	}
	if f.Size >= zipEndLen {
		tail, err := readExact(ctx, t, f.Name, f.Size-zipEndLen, zipEndLen)
		if err != nil {
			return err
		}
		if bytes.Equal(tail[:4], zipEndRecord) && binary.LittleEndian.Uint16(tail[20:]) == 0 {
			return nil
		}
	}
	// Slow path: an archive comment, or a truncated archive.
	n := min(f.Size, zipEndLen+zipMaxComment)
	tail, err := readExact(ctx, t, f.Name, f.Size-n, n)
	if err != nil {
		return err
	}
	for i := len(tail) - zipEndLen; i >= 0; i-- {
		if bytes.Equal(tail[i:i+4], zipEndRecord) && int(binary.LittleEndian.Uint16(tail[i+20:])) == len(tail)-i-zipEndLen {
			return nil
		}
	}
	return fmt.Errorf("%s: zip archive (torch.save) without its end record, truncated at %d bytes: %w", f.Name, f.Size, ErrIncomplete)
}
