package main

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// sampleFile is one blob of the sample dataset, with the bytes it must
// have. Dir markers are empty blobs with hdi_isfolder=true, as BlobFuse2
// and the portal write them for empty directories.
type sampleFile struct {
	Name      string
	Data      []byte
	DirMarker bool
}

// datasetSpec sizes the sample dataset.
type datasetSpec struct {
	TrainShards int
	TestShards  int
	ShardSize   int
}

// sampleDataset builds a small training layout: sharded train/test data
// with a manifest, an empty validation directory, and a checkpoint with a
// real safetensors file. Contents are deterministic, so a later run (or a
// mount test) can check them byte for byte.
func sampleDataset(spec datasetSpec) []sampleFile {
	const root = "datasets/mnist-like/"
	var files []sampleFile
	var manifest strings.Builder
	manifest.WriteString("# shard size md5\n")
	addShards := func(split string, n int, seed uint64) {
		for i := range n {
			name := fmt.Sprintf("%s%s/shard-%04d.bin", root, split, i)
			data := pseudoRandom(seed+uint64(i), spec.ShardSize)
			sum := md5.Sum(data)
			fmt.Fprintf(&manifest, "%s %d %s\n", strings.TrimPrefix(name, root), len(data), hex.EncodeToString(sum[:]))
			files = append(files, sampleFile{Name: name, Data: data})
		}
	}
	addShards("train", spec.TrainShards, 1000)
	addShards("test", spec.TestShards, 2000)
	files = append(files,
		sampleFile{Name: root + "manifest.txt", Data: []byte(manifest.String())},
		sampleFile{Name: root + "val", DirMarker: true},
		sampleFile{Name: "checkpoints/checkpoint-100/model.safetensors", Data: safetensors()},
		sampleFile{Name: "checkpoints/checkpoint-100/trainer_state.json", Data: trainerState()},
	)
	return files
}

func pseudoRandom(seed uint64, n int) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed*0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

// tensorSpec is one entry of a safetensors header.
type tensorSpec struct {
	DType       string  `json:"dtype"`
	Shape       []int   `json:"shape"`
	DataOffsets [2]int  `json:"data_offsets"`
	fill        float32 // value of every element, for a recognizable file
}

// safetensors returns a valid safetensors file: an 8-byte little-endian
// header length, the JSON header (padded with spaces to 8 bytes, as the
// format allows), then the tensors' little-endian F32 data.
func safetensors() []byte {
	names := []string{"encoder.layer.0.weight", "encoder.layer.0.bias", "head.weight"}
	tensors := map[string]*tensorSpec{
		"encoder.layer.0.weight": {DType: "F32", Shape: []int{256, 512}, fill: 0.02},
		"encoder.layer.0.bias":   {DType: "F32", Shape: []int{512}, fill: 0},
		"head.weight":            {DType: "F32", Shape: []int{512, 10}, fill: -0.01},
	}
	off := 0
	for _, n := range names {
		t := tensors[n]
		elems := 1
		for _, d := range t.Shape {
			elems *= d
		}
		t.DataOffsets = [2]int{off, off + 4*elems}
		off += 4 * elems
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt", "step": "100"}}
	for n, t := range tensors {
		header[n] = t
	}
	js, err := json.Marshal(header)
	if err != nil {
		panic(err) // static data
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	out := make([]byte, 8, 8+len(js)+off)
	binary.LittleEndian.PutUint64(out, uint64(len(js)))
	out = append(out, js...)
	for _, n := range names {
		t := tensors[n]
		for i := t.DataOffsets[0]; i < t.DataOffsets[1]; i += 4 {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(t.fill))
		}
	}
	return out
}

func trainerState() []byte {
	type logEntry struct {
		Epoch float64 `json:"epoch"`
		Step  int     `json:"step"`
		Loss  float64 `json:"loss"`
	}
	state := struct {
		GlobalStep int        `json:"global_step"`
		Epoch      float64    `json:"epoch"`
		MaxSteps   int        `json:"max_steps"`
		LogHistory []logEntry `json:"log_history"`
	}{GlobalStep: 100, Epoch: 1, MaxSteps: 1000}
	for s := 10; s <= 100; s += 10 {
		state.LogHistory = append(state.LogHistory, logEntry{Epoch: float64(s) / 100, Step: s, Loss: 2.3 / float64(s/10)})
	}
	b, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		panic(err) // static data
	}
	return append(b, '\n')
}

// seedBlockSize is the block size large files are staged in, as the
// upload path will do for checkpoints.
const seedBlockSize = 1 << 20

// seedBlockParallelism is how many blocks of one file are staged at once.
const seedBlockParallelism = 8

// seedStats summarizes a seed run.
type seedStats struct {
	Files   int
	Bytes   int64
	Elapsed time.Duration
}

// seed uploads files to s, parallel across files: small ones with one Put,
// larger ones as blocks staged in parallel and a commit that records the
// file's MD5.
func seed(ctx context.Context, s blob.Store, files []sampleFile) (seedStats, error) {
	start := time.Now()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, 4)
	)
	for _, f := range files {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := upload(ctx, s, f); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return seedStats{}, first
	}
	st := seedStats{Files: len(files), Elapsed: time.Since(start)}
	for _, f := range files {
		st.Bytes += int64(len(f.Data))
	}
	return st, nil
}

func upload(ctx context.Context, s blob.Store, f sampleFile) error {
	if f.DirMarker {
		_, err := s.Put(ctx, f.Name, nil, blob.WriteOptions{Metadata: map[string]string{blob.MetaIsFolder: "true"}})
		return err
	}
	if len(f.Data) <= seedBlockSize {
		_, err := s.Put(ctx, f.Name, f.Data, blob.WriteOptions{ContentType: contentType(f.Name)})
		return err
	}
	var session [16]byte
	if _, err := rand.Read(session[:]); err != nil {
		return err
	}
	var (
		ids   []string
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, seedBlockParallelism)
	)
	for i, off := 0, 0; off < len(f.Data); i, off = i+1, off+seedBlockSize {
		id := blob.BlockID(session, uint64(i))
		ids = append(ids, id)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.StageBlock(ctx, f.Name, id, f.Data[off:min(off+seedBlockSize, len(f.Data))]); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	sum := md5.Sum(f.Data)
	_, err := s.CommitBlocks(ctx, f.Name, ids, blob.WriteOptions{ContentMD5: sum[:], ContentType: contentType(f.Name)})
	return err
}

func contentType(name string) string {
	switch {
	case strings.HasSuffix(name, ".json"):
		return "application/json"
	case strings.HasSuffix(name, ".txt"):
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}
