package blob

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// BlockID returns the block id for block index of one upload session.
// Ids are the base64 of a fixed 24 bytes (16-byte session + 8-byte index), so
// every id of a blob has the same length, as the service requires, and
// sessions never reuse each other's ids.
func BlockID(session [16]byte, index uint64) string {
	var raw [24]byte
	copy(raw[:16], session[:])
	binary.BigEndian.PutUint64(raw[16:], index)
	return base64.StdEncoding.EncodeToString(raw[:])
}

// ValidateBlockID checks the rules the service enforces on a block id.
func ValidateBlockID(id string) error {
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil {
		return fmt.Errorf("block id %q is not base64: %w", id, ErrInvalid)
	}
	if len(raw) == 0 || len(raw) > 64 {
		return fmt.Errorf("block id %q decodes to %d bytes, want 1..64: %w", id, len(raw), ErrInvalid)
	}
	return nil
}
