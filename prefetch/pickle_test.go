package prefetch

import (
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnpickleValues(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want string
	}{
		// pickle.dumps(x, protocol=4) by CPython 3.11 for each x.
		{"small ints", "\x80\x04\x95\x0d\x00\x00\x00\x00\x00\x00\x00K\x01M\x00\x01J\xff\xff\xff\xff\x87\x94.", "(1 256 -1)"},
		{"long", "\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00\x01.", "18446744073709551616"},
		{"negative", "\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00J\xfe\xff\xff\xff.", "-2"},
		{"negative long1", "\x80\x04\x8a\x01\xfe.", "-2"},
		{"str and bytes", "\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\x03h\xc3\xa9\x94C\x02\x00\x01\x94\x86\x94.", "(h\u00e9 [0 1])"},
		{"dict", "\x80\x04\x95\x13\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01\x8c\x01b\x94N\x88\x86\x94u.", "{a:1 b:(None true)}"},
		{"memo reuse", "\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94h\x00h\x00\x87\x94.", "(x x x)"},
		{"float", "\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00G?\xf8\x00\x00\x00\x00\x00\x00.", "1.5"},
		// pickle.dumps(torch.Size([2, 3]), protocol=2).
		{"protocol 2 global", "\x80\x02ctorch\nSize\nq\x00K\x02K\x03\x86q\x01\x85q\x02Rq\x03.", "torch.Size((2 3))"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := unpickle([]byte(c.in), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := show(v); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

// show renders decoded values compactly for the table above.
func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "true"
		}
		return "false"
	case int64:
		return big.NewInt(x).String()
	case *big.Int:
		return x.String()
	case float64:
		return big.NewFloat(x).String()
	case string:
		return x
	case []byte:
		var parts []string
		for _, b := range x {
			parts = append(parts, big.NewInt(int64(b)).String())
		}
		return "[" + strings.Join(parts, " ") + "]"
	case pyTuple:
		var parts []string
		for _, e := range x {
			parts = append(parts, show(e))
		}
		return "(" + strings.Join(parts, " ") + ")"
	case *pyList:
		var parts []string
		for _, e := range x.Items {
			parts = append(parts, show(e))
		}
		return "[" + strings.Join(parts, " ") + "]"
	case *pyDict:
		var parts []string
		for _, kv := range x.Items {
			parts = append(parts, show(kv.K)+":"+show(kv.V))
		}
		return "{" + strings.Join(parts, " ") + "}"
	case *pyObject:
		var parts []string
		for _, e := range x.Args {
			parts = append(parts, show(e))
		}
		return x.Class.String() + "(" + strings.Join(parts, " ") + ")"
	case pyGlobal:
		return x.String()
	}
	return "?"
}

func TestUnpickleMalformed(t *testing.T) {
	for _, c := range []struct {
		name, in, text string
	}{
		{"empty", "", "no STOP"},
		{"no stop", "\x80\x04K\x01", "no STOP"},
		{"underflow", "\x80\x04.", "stack underflow"},
		{"short string", "\x80\x04\x8c\x05ab.", "5 bytes wanted"},
		{"huge string", "\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f.", "bytes wanted"},
		{"unset memo", "\x80\x04h\x07.", "memo 7 unset"},
		{"protocol 6", "\x80\x06N.", "protocol 6"},
		{"persistent id", "\x80\x04\x8c\x01xQ.", "opcode 0x51"},
		{"text opcode", "\x80\x04I1\n.", "opcode 0x49"},
		{"trailing bytes", "\x80\x04N.N", "after STOP"},
		{"call of non-global", "\x80\x04K\x01)R.", "call of int64"},
		{"build on int", "\x80\x04K\x01}b.", "BUILD on int64"},
		{"odd dict", "\x80\x04(K\x01d.", "odd number"},
		{"append to int", "\x80\x04K\x01K\x02a.", "APPEND to int64"},
		{"mark underflow", "\x80\x04(t0.", "stack underflow"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := unpickle([]byte(c.in), nil)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want ErrMalformed containing %q", err, c.text)
			}
		})
	}
}

func TestParseDCPMetadataRejects(t *testing.T) {
	meta, err := os.ReadFile(filepath.Join(fixtureDir, "dcp/step-20/.metadata"))
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) []byte {
		if !strings.Contains(string(meta), old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return []byte(strings.Replace(string(meta), old, new, 1))
	}
	for _, c := range []struct {
		name string
		in   []byte
		text string
	}{
		// Same-length substitutions keep the pickle's framing valid.
		{"foreign module", replace("\x8c\x07pathlib", "\x8c\x07subproc"), "unexpected class subproc.PosixPath"},
		{"wrong root class", replace("\x8c\x08Metadata", "\x8c\x08Metadatx"), "not Metadata"},
		{"escaping path", replace("__0_0.distcp", "../0_0.distcp"[:12]), "leaves the checkpoint"},
		{"truncated", meta[:len(meta)/2], "pickle"},
		{"not a pickle", []byte("PK\x03\x04"), "not a pickle"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseDCPMetadata(c.in)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want ErrMalformed containing %q", err, c.text)
			}
		})
	}
}

// FuzzParseDCPMetadata: arbitrary bytes never panic and fail with
// ErrMalformed.
func FuzzParseDCPMetadata(f *testing.F) {
	for _, p := range []string{"dcp/step-20/.metadata", "malformed/dcp-evil/.metadata", "malformed/dcp-dict/.metadata"} {
		b, err := os.ReadFile(filepath.Join(fixtureDir, p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := ParseDCPMetadata(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		for _, it := range md.Items {
			if it.Off < 0 || it.Len < 0 || it.Path == "" {
				t.Fatalf("bad item %+v", it)
			}
		}
	})
}
