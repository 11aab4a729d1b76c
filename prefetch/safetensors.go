package prefetch

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// MaxSafetensorsHeader is the largest JSON header accepted, the same bound
// as the reference implementation (100 MB): a larger length prefix means a
// file that is not safetensors, and must not make us allocate gigabytes.
const MaxSafetensorsHeader = 100_000_000

// Tensor is one entry of a safetensors header.
type Tensor struct {
	Name  string
	DType string
	Shape []int64
	// Begin and End are the header's data_offsets: [Begin, End) relative to
	// the first byte after the header.
	Begin, End int64
}

// Safetensors is a parsed safetensors header.
//
// The format: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON
// mapping tensor names to {"dtype", "shape", "data_offsets"} plus an
// optional "__metadata__" string map (writers pad the JSON with spaces so
// that 8+N is a multiple of 8), then the tensor data.
type Safetensors struct {
	// HeaderLen is N.
	HeaderLen int64
	// Tensors are sorted by Begin; they tile [0, DataLen) without gaps or
	// overlaps, as the reference implementation requires.
	Tensors  []Tensor
	Metadata map[string]string
}

// DataStart is the file offset of the data buffer.
func (s *Safetensors) DataStart() int64 { return 8 + s.HeaderLen }

// DataLen is the length of the data buffer.
func (s *Safetensors) DataLen() int64 {
	if len(s.Tensors) == 0 {
		return 0
	}
	return s.Tensors[len(s.Tensors)-1].End
}

// FileSize is the size a complete file with this header has.
func (s *Safetensors) FileSize() int64 { return s.DataStart() + s.DataLen() }

// TensorRange is the file range holding t's data.
func (s *Safetensors) TensorRange(t Tensor) (off, n int64) {
	return s.DataStart() + t.Begin, t.End - t.Begin
}

// dtypeBits gives the element width of the dtypes the format defines;
// unknown (future) dtypes are accepted without a size check.
var dtypeBits = map[string]int64{
	"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
	"I16": 16, "U16": 16, "F16": 16, "BF16": 16,
	"I32": 32, "U32": 32, "F32": 32,
	"I64": 64, "U64": 64, "F64": 64, "C64": 64,
	"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

// ParseSafetensors parses a file prefix that holds at least the 8-byte
// length and the whole header. It checks the header for internal
// consistency only; CheckSize compares it with the file's size.
func ParseSafetensors(prefix []byte) (*Safetensors, error) {
	if len(prefix) < 8 {
		return nil, fmt.Errorf("safetensors: %d bytes, too short for the 8-byte header length: %w", len(prefix), ErrMalformed)
	}
	n := binary.LittleEndian.Uint64(prefix)
	if n < 2 || n > MaxSafetensorsHeader {
		return nil, fmt.Errorf("safetensors: header length %d outside [2, %d]: %w", n, MaxSafetensorsHeader, ErrMalformed)
	}
	if uint64(len(prefix)-8) < n {
		return nil, fmt.Errorf("safetensors: header of %d bytes truncated to %d: %w", n, len(prefix)-8, ErrMalformed)
	}
	return parseHeaderJSON(prefix[8 : 8+n])
}

func parseHeaderJSON(js []byte) (*Safetensors, error) {
	h := &Safetensors{HeaderLen: int64(len(js))}
	if js[0] != '{' {
		return nil, fmt.Errorf("safetensors: header does not start with '{': %w", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	var raw map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("safetensors: header JSON: %v: %w", err, ErrMalformed)
	}
	// Only padding may follow the object.
	if rest := js[dec.InputOffset():]; len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("safetensors: %d bytes of garbage after the header JSON: %w", len(rest), ErrMalformed)
	}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__ is not a string map: %v: %w", err, ErrMalformed)
			}
			continue
		}
		var ti struct {
			DType       *string  `json:"dtype"`
			Shape       *[]int64 `json:"shape"`
			DataOffsets *[]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &ti); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %v: %w", name, err, ErrMalformed)
		}
		if ti.DType == nil || ti.Shape == nil || ti.DataOffsets == nil || len(*ti.DataOffsets) != 2 {
			return nil, fmt.Errorf("safetensors: tensor %q needs dtype, shape and two data_offsets: %w", name, ErrMalformed)
		}
		t := Tensor{Name: name, DType: *ti.DType, Shape: *ti.Shape, Begin: (*ti.DataOffsets)[0], End: (*ti.DataOffsets)[1]}
		if t.Begin < 0 || t.End < t.Begin {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] invalid: %w", name, t.Begin, t.End, ErrMalformed)
		}
		if err := checkTensorBytes(t); err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, t)
	}
	slices.SortFunc(h.Tensors, func(a, b Tensor) int {
		if a.Begin != b.Begin {
			return cmp.Compare(a.Begin, b.Begin)
		}
		if a.End != b.End {
			return cmp.Compare(a.End, b.End)
		}
		return strings.Compare(a.Name, b.Name)
	})
	var at int64
	for _, t := range h.Tensors {
		switch {
		case t.Begin < at:
			return nil, fmt.Errorf("safetensors: tensor %q [%d, %d) overlaps the previous tensor ending at %d: %w", t.Name, t.Begin, t.End, at, ErrMalformed)
		case t.Begin > at:
			return nil, fmt.Errorf("safetensors: %d-byte hole before tensor %q at %d: %w", t.Begin-at, t.Name, t.Begin, ErrMalformed)
		}
		at = t.End
	}
	return h, nil
}

// checkTensorBytes verifies that shape × dtype width equals the tensor's
// byte length, for dtypes the format defines.
func checkTensorBytes(t Tensor) error {
	width, ok := dtypeBits[t.DType]
	if !ok {
		return nil
	}
	n := uint64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("safetensors: tensor %q has negative dimension %d: %w", t.Name, d, ErrMalformed)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > 1<<62 {
			return fmt.Errorf("safetensors: tensor %q shape %v overflows: %w", t.Name, t.Shape, ErrMalformed)
		}
		n = lo
	}
	hi, bitsTotal := bits.Mul64(n, uint64(width))
	if hi != 0 {
		return fmt.Errorf("safetensors: tensor %q shape %v overflows: %w", t.Name, t.Shape, ErrMalformed)
	}
	if want := (bitsTotal + 7) / 8; want != uint64(t.End-t.Begin) {
		return fmt.Errorf("safetensors: tensor %q is %s%v = %d bytes but data_offsets span %d: %w", t.Name, t.DType, t.Shape, want, t.End-t.Begin, ErrMalformed)
	}
	return nil
}

// CheckSize compares the header with the file's actual size: a shorter
// file is a write that has not finished (ErrIncomplete), a longer one has
// bytes no tensor owns (ErrMalformed, as the reference loader says).
func (s *Safetensors) CheckSize(size int64) error {
	switch want := s.FileSize(); {
	case size < want:
		return fmt.Errorf("safetensors: file has %d of the %d bytes its header describes: %w", size, want, ErrIncomplete)
	case size > want:
		return fmt.Errorf("safetensors: file has %d bytes after the last tensor: %w", size-want, ErrMalformed)
	}
	return nil
}

// ReadSafetensors reads and validates the header of the safetensors file
// name, size bytes long, including CheckSize.
func ReadSafetensors(ctx context.Context, t Tree, name string, size int64) (*Safetensors, error) {
	if size < 8 {
		return nil, fmt.Errorf("%s: %d bytes, too short for a safetensors header: %w", name, size, ErrIncomplete)
	}
	lenBuf, err := readExact(ctx, t, name, 0, 8)
	if err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint64(lenBuf)
	if n < 2 || n > MaxSafetensorsHeader {
		return nil, fmt.Errorf("%s: safetensors header length %d outside [2, %d]: %w", name, n, MaxSafetensorsHeader, ErrMalformed)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("%s: safetensors header of %d bytes but the file has %d: %w", name, n, size, ErrIncomplete)
	}
	js, err := readExact(ctx, t, name, 8, int64(n))
	if err != nil {
		return nil, err
	}
	h, err := parseHeaderJSON(js)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := h.CheckSize(size); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return h, nil
}
