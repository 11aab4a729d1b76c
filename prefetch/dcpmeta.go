package prefetch

import (
	"cmp"
	"fmt"
	"io/fs"
	"math"
	"math/big"
	"slices"
	"strings"
)

// DCPMetadata is what prefetch uses of a PyTorch Distributed Checkpoint's
// .metadata: torch.distributed.checkpoint.metadata.Metadata as pickled by
// FileSystemWriter.finish (PyTorch 2.x; the 1.13 prototype's
// torch.distributed._shard.checkpoint paths are accepted too).
type DCPMetadata struct {
	// Tensors and Bytes are state_dict_metadata: TensorStorageMetadata
	// and BytesStorageMetadata entries.
	Tensors map[string]DCPTensor
	Bytes   map[string]bool
	// Items are storage_data: where each saved item lives, sorted by
	// (Path, Off).
	Items   []DCPItem
	Version string
}

// DCPTensor is one TensorStorageMetadata.
type DCPTensor struct {
	DType  string // the torch dtype's name, e.g. "float32"
	Size   []int64
	Chunks []DCPChunk
}

// DCPChunk is one ChunkStorageMetadata: the slice of the tensor one save
// rank wrote.
type DCPChunk struct{ Offsets, Sizes []int64 }

// Replicated reports whether one chunk covers the whole tensor: a tensor
// every restoring rank loads (DDP weights, scalars), saved once by one rank
// after deduplication.
func (t DCPTensor) Replicated() bool {
	for _, c := range t.Chunks {
		if slices.Equal(c.Sizes, t.Size) && !slices.ContainsFunc(c.Offsets, func(o int64) bool { return o != 0 }) {
			return true
		}
	}
	return false
}

// DCPItem is one storage_data entry: MetadataIndex(fqn, offset, index) ->
// _StorageInfo(relative_path, offset, length).
type DCPItem struct {
	FQN string
	// ChunkOffset is MetadataIndex.offset (nil for a bytes item).
	ChunkOffset []int64
	Path        string // relative to the checkpoint directory
	Off, Len    int64
}

// maxDCPMetadata bounds the .metadata read; a model with millions of
// chunks produces tens of MB.
const maxDCPMetadata = 1 << 30

// dcpModules are the module prefixes a .metadata may name: DCP's own
// classes, torch.Size / dtypes / layouts, pathlib (StorageMeta.checkpoint_id
// is a Path), and the builtins pickle uses for enums and sets. Anything
// else — os.system, say — is refused before it is even recorded.
var dcpModules = []string{"torch", "pathlib", "builtins", "__builtin__", "collections", "copyreg", "copy_reg", "_codecs", "enum"}

func allowDCPGlobal(g pyGlobal) error {
	for _, m := range dcpModules {
		if g.Module == m || strings.HasPrefix(g.Module, m+".") {
			return nil
		}
	}
	return errf("unexpected class %s in DCP metadata", g)
}

// dcpClass reports whether v is an instance of DCP's class name, under
// either the current or the 1.13 prototype module.
func dcpClass(v any, name string) (*pyObject, bool) {
	o, ok := v.(*pyObject)
	if !ok || o.Class.Name != name {
		return nil, false
	}
	switch o.Class.Module {
	case "torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem",
		"torch.distributed._shard.checkpoint.metadata", "torch.distributed._shard.checkpoint.filesystem",
		"torch.distributed.checkpoint._fsspec_filesystem", "torch.distributed.checkpoint.fsspec_filesystem",
		"torch.distributed._shard.sharded_tensor.metadata":
		return o, true
	}
	return nil, false
}

// ParseDCPMetadata decodes a .metadata file.
func ParseDCPMetadata(data []byte) (*DCPMetadata, error) {
	if len(data) < 2 || data[0] != opProto {
		return nil, fmt.Errorf("dcp .metadata: not a pickle (protocol 2+): %w", ErrMalformed)
	}
	root, err := unpickle(data, allowDCPGlobal)
	if err != nil {
		return nil, fmt.Errorf("dcp .metadata: %w", err)
	}
	md, ok := dcpClass(root, "Metadata")
	if !ok {
		return nil, fmt.Errorf("dcp .metadata: top-level object is %s, not Metadata: %w", describe(root), ErrMalformed)
	}
	st, err := dataclassState(md)
	if err != nil {
		return nil, err
	}
	out := &DCPMetadata{Tensors: map[string]DCPTensor{}, Bytes: map[string]bool{}}
	if v, ok := st["version"].(string); ok {
		out.Version = v
	}

	sdm, ok := st["state_dict_metadata"].(*pyDict)
	if !ok {
		return nil, fmt.Errorf("dcp .metadata: state_dict_metadata is %s, not a dict: %w", describe(st["state_dict_metadata"]), ErrMalformed)
	}
	for _, kv := range sdm.Items {
		fqn, ok := kv.K.(string)
		if !ok {
			return nil, fmt.Errorf("dcp .metadata: state_dict_metadata key is %s: %w", describe(kv.K), ErrMalformed)
		}
		if _, ok := dcpClass(kv.V, "BytesStorageMetadata"); ok {
			out.Bytes[fqn] = true
			continue
		}
		tsm, ok := dcpClass(kv.V, "TensorStorageMetadata")
		if !ok {
			return nil, fmt.Errorf("dcp .metadata: %q is %s: %w", fqn, describe(kv.V), ErrMalformed)
		}
		t, err := decodeTensorMeta(tsm)
		if err != nil {
			return nil, fmt.Errorf("dcp .metadata: %q: %w", fqn, err)
		}
		out.Tensors[fqn] = t
	}

	sd, ok := st["storage_data"].(*pyDict)
	if !ok {
		return nil, fmt.Errorf("dcp .metadata: storage_data is %s, not the dict FileSystemWriter writes: %w", describe(st["storage_data"]), ErrMalformed)
	}
	for _, kv := range sd.Items {
		it, err := decodeStorageItem(kv)
		if err != nil {
			return nil, fmt.Errorf("dcp .metadata: storage_data: %w", err)
		}
		if _, ok := out.Tensors[it.FQN]; !ok && !out.Bytes[it.FQN] {
			return nil, fmt.Errorf("dcp .metadata: storage_data names %q, which state_dict_metadata lacks: %w", it.FQN, ErrMalformed)
		}
		out.Items = append(out.Items, it)
	}
	slices.SortFunc(out.Items, func(a, b DCPItem) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return cmp.Compare(a.Off, b.Off)
	})
	return out, nil
}

// dataclassState returns the attribute dict a dataclass instance was
// pickled with (BUILD state, or the dict half of a (dict, slots) pair).
func dataclassState(o *pyObject) (map[string]any, error) {
	var d *pyDict
	switch s := o.State.(type) {
	case *pyDict:
		d = s
	case pyTuple:
		if len(s) == 2 {
			d, _ = s[0].(*pyDict)
		}
	}
	if d == nil {
		return nil, fmt.Errorf("%s state is %s, not an attribute dict: %w", o.Class, describe(o.State), ErrMalformed)
	}
	m := make(map[string]any, len(d.Items))
	for _, kv := range d.Items {
		k, ok := kv.K.(string)
		if !ok {
			return nil, fmt.Errorf("%s attribute name is %s: %w", o.Class, describe(kv.K), ErrMalformed)
		}
		m[k] = kv.V
	}
	return m, nil
}

func decodeTensorMeta(o *pyObject) (DCPTensor, error) {
	st, err := dataclassState(o)
	if err != nil {
		return DCPTensor{}, err
	}
	var t DCPTensor
	if t.Size, err = ints(st["size"]); err != nil {
		return t, fmt.Errorf("size: %w", err)
	}
	if p, ok := dcpClass(st["properties"], "TensorProperties"); ok {
		// PyTorch pickles TensorProperties via __getstate__ as a tuple whose
		// first element is the dtype; older versions pickled the dict.
		var dt any
		switch s := p.State.(type) {
		case pyTuple:
			if len(s) > 0 {
				dt = s[0]
			}
		case *pyDict:
			for _, kv := range s.Items {
				if kv.K == "dtype" {
					dt = kv.V
				}
			}
		}
		if g, ok := dt.(pyGlobal); ok && g.Module == "torch" {
			t.DType = g.Name
		}
	}
	chunks, ok := st["chunks"].(*pyList)
	if !ok {
		return t, fmt.Errorf("chunks is %s: %w", describe(st["chunks"]), ErrMalformed)
	}
	for _, c := range chunks.Items {
		co, ok := dcpClass(c, "ChunkStorageMetadata")
		if !ok {
			return t, fmt.Errorf("chunk is %s: %w", describe(c), ErrMalformed)
		}
		cs, err := dataclassState(co)
		if err != nil {
			return t, err
		}
		var ch DCPChunk
		if ch.Offsets, err = ints(cs["offsets"]); err != nil {
			return t, fmt.Errorf("chunk offsets: %w", err)
		}
		if ch.Sizes, err = ints(cs["sizes"]); err != nil {
			return t, fmt.Errorf("chunk sizes: %w", err)
		}
		t.Chunks = append(t.Chunks, ch)
	}
	return t, nil
}

func decodeStorageItem(kv pyKV) (DCPItem, error) {
	var it DCPItem
	idx, ok := dcpClass(kv.K, "MetadataIndex")
	if !ok {
		return it, fmt.Errorf("key is %s, not MetadataIndex: %w", describe(kv.K), ErrMalformed)
	}
	is, err := dataclassState(idx)
	if err != nil {
		return it, err
	}
	if it.FQN, ok = is["fqn"].(string); !ok {
		return it, fmt.Errorf("MetadataIndex.fqn is %s: %w", describe(is["fqn"]), ErrMalformed)
	}
	if off, present := is["offset"]; present && off != nil {
		if it.ChunkOffset, err = ints(off); err != nil {
			return it, fmt.Errorf("%q: MetadataIndex.offset: %w", it.FQN, err)
		}
	}
	info, ok := dcpClass(kv.V, "_StorageInfo")
	if !ok {
		return it, fmt.Errorf("%q: value is %s, not _StorageInfo: %w", it.FQN, describe(kv.V), ErrMalformed)
	}
	ss, err := dataclassState(info)
	if err != nil {
		return it, err
	}
	if it.Path, ok = ss["relative_path"].(string); !ok {
		return it, fmt.Errorf("%q: relative_path is %s: %w", it.FQN, describe(ss["relative_path"]), ErrMalformed)
	}
	if !fs.ValidPath(it.Path) || it.Path == "." {
		return it, fmt.Errorf("%q: relative_path %q leaves the checkpoint: %w", it.FQN, it.Path, ErrMalformed)
	}
	off, ok1 := toInt64(ss["offset"])
	n, ok2 := toInt64(ss["length"])
	if !ok1 || !ok2 || off < 0 || n < 0 || off > math.MaxInt64-n {
		return it, fmt.Errorf("%q: storage range (%s, %s) invalid: %w", it.FQN, describe(ss["offset"]), describe(ss["length"]), ErrMalformed)
	}
	it.Off, it.Len = off, n
	return it, nil
}

// ints decodes a torch.Size (pickled as torch.Size(tuple)), tuple or list
// of ints.
func ints(v any) ([]int64, error) {
	if o, ok := v.(*pyObject); ok && o.Class == (pyGlobal{"torch", "Size"}) && len(o.Args) == 1 {
		v = o.Args[0]
	}
	var items []any
	switch s := v.(type) {
	case pyTuple:
		items = s
	case *pyList:
		items = s.Items
	default:
		return nil, fmt.Errorf("%s is not a torch.Size: %w", describe(v), ErrMalformed)
	}
	out := make([]int64, 0, len(items))
	for _, it := range items {
		n, ok := toInt64(it)
		if !ok || n < 0 {
			return nil, fmt.Errorf("dimension %s: %w", describe(it), ErrMalformed)
		}
		out = append(out, n)
	}
	return out, nil
}

func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case *big.Int:
		if n.IsInt64() {
			return n.Int64(), true
		}
	}
	return 0, false
}

// describe names a decoded value's kind for error messages without
// printing (possibly huge, possibly cyclic) contents.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case *pyObject:
		return "an instance of " + x.Class.String()
	case pyGlobal:
		return "the global " + x.String()
	case *pyDict:
		return "a dict"
	case *pyList:
		return "a list"
	case pyTuple:
		return "a tuple"
	case string:
		return "a str"
	case []byte:
		return "bytes"
	case int64, *big.Int:
		return "an int"
	case float64:
		return "a float"
	case bool:
		return "a bool"
	}
	return fmt.Sprintf("%T", v)
}
