package prefetch

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func stRaw(header string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestSafetensorsMalformed(t *testing.T) {
	huge := binary.LittleEndian.AppendUint64(nil, MaxSafetensorsHeader+1)
	for _, c := range []struct {
		name string
		file []byte
		err  error
		text string
	}{
		{"empty", nil, ErrIncomplete, "too short"},
		{"truncated length", []byte{1, 2, 3}, ErrIncomplete, "too short"},
		{"huge N", append(huge, '{', '}'), ErrMalformed, "outside [2, 100000000]"},
		{"N larger than file", stRaw(`{}`, 0)[:9], ErrIncomplete, "header of 2 bytes"},
		{"not JSON", stRaw(`[1,2]`, 0), ErrMalformed, "does not start with '{'"},
		{"bad JSON", stRaw(`{"a":`, 0), ErrMalformed, "header JSON"},
		{"garbage after JSON", stRaw(`{}  x`, 0), ErrMalformed, "garbage"},
		{"missing dtype", stRaw(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, 4), ErrMalformed, "needs dtype"},
		{"one offset", stRaw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, 4), ErrMalformed, "two data_offsets"},
		{"reversed offsets", stRaw(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4), ErrMalformed, "invalid"},
		{"negative offset", stRaw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[-4,0]}}`, 4), ErrMalformed, "invalid"},
		{"shape mismatch", stRaw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), ErrMalformed, "= 8 bytes"},
		{"negative dim", stRaw(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), ErrMalformed, "negative dimension"},
		{"overflowing shape", stRaw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}}`, 4), ErrMalformed, "overflows"},
		{"overlap", stRaw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6), ErrMalformed, "overlaps"},
		{"hole", stRaw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, 8), ErrMalformed, "hole"},
		{"offsets past the end", stRaw(`{"a":{"dtype":"U8","shape":[64],"data_offsets":[0,64]}}`, 4), ErrIncomplete, "has 67 of the 127 bytes"},
		{"trailing bytes", stRaw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, 8), ErrMalformed, "after the last tensor"},
		{"metadata not strings", stRaw(`{"__metadata__":{"a":1}}`, 0), ErrMalformed, "string map"},
		{"offset beyond int64", stRaw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,99999999999999999999]}}`, 0), ErrMalformed, "tensor \"a\""},
	} {
		t.Run(c.name, func(t *testing.T) {
			tree := newMemTree().add("x.safetensors", c.file)
			_, err := ReadSafetensors(context.Background(), tree, "x.safetensors", int64(len(c.file)))
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want %v containing %q", err, c.err, c.text)
			}
		})
	}
}

func TestSafetensorsValid(t *testing.T) {
	file := safetensorsFile(t, "b", "BF16", []int64{3, 2}, "a", "F32", []int64{2}, "s", "I64", []int64{}, "e", "F32", []int64{0, 5}, "f4", "F4", []int64{3})
	h, err := ParseSafetensors(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.CheckSize(int64(len(file))); err != nil {
		t.Fatal(err)
	}
	if h.DataStart()%8 != 0 || h.Metadata["format"] != "pt" {
		t.Errorf("data start %d, metadata %v", h.DataStart(), h.Metadata)
	}
	var got []string
	for _, tn := range h.Tensors {
		got = append(got, tn.Name)
	}
	// Sorted by offset; the empty "e" sorts before "f4" at the same offset.
	if strings.Join(got, ",") != "b,a,s,e,f4" {
		t.Errorf("order %v", got)
	}
	// Every tensor's bytes are its index, as safetensorsFile wrote them.
	for i, tn := range h.Tensors {
		off, n := h.TensorRange(tn)
		for _, b := range file[off : off+n] {
			if want := map[string]byte{"b": 0, "a": 1, "e": 3, "s": 2, "f4": 4}[tn.Name]; b != want {
				t.Fatalf("tensor %d %s: byte %d, want %d", i, tn.Name, b, want)
			}
		}
	}
}

// FuzzParseSafetensors: any input parses or fails with ErrMalformed, never
// panics, and a parsed header is internally consistent.
func FuzzParseSafetensors(f *testing.F) {
	f.Add(safetensorsFile(f, "a", "F32", []int64{2, 2}, "b", "U8", []int64{3}))
	f.Add(stRaw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, 4))
	f.Add(stRaw(`{"__metadata__":{"format":"pt"}}`, 0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{'})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseSafetensors(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		var at int64
		for _, tn := range h.Tensors {
			if tn.Begin != at || tn.End < tn.Begin {
				t.Fatalf("tensor %q [%d,%d) does not follow %d", tn.Name, tn.Begin, tn.End, at)
			}
			at = tn.End
		}
		if h.DataStart() != 8+h.HeaderLen || h.HeaderLen > MaxSafetensorsHeader {
			t.Fatalf("header length %d", h.HeaderLen)
		}
		_ = h.CheckSize(int64(len(data)))
	})
}
