package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"golang.org/x/sync/errgroup"

	"github.com/blobfs/blobfs/bench/feed"
)

// The GPU-feed benchmark (issue #9) and the checkpoint cycle (#6): what a
// training job sees, in stall fraction and seconds, for blobfs with and
// without prefetch, rclone, and the raw SDK reading into memory.

// feedSizes scale the dataset and the checkpoint with BLOBFS_BENCH_SIZE.
type feedSizes struct {
	Shards       int
	ShardBytes   int64
	CkptFiles    int
	CkptBytes    int64
	RestoreShard int64 // each of the 16 shards of the restore benchmark
}

var feedSizeSets = map[string]feedSizes{
	// Epochs of a few seconds at least, so the first batch's latency does
	// not dominate the stall fraction.
	"small": {Shards: 160, ShardBytes: 8 << 20, CkptFiles: 8, CkptBytes: 32 << 20, RestoreShard: 16 << 20},
	"full":  {Shards: 256, ShardBytes: 16 << 20, CkptFiles: 8, CkptBytes: 512 << 20, RestoreShard: 256 << 20},
}

// peerSDKBlocks is the raw SDK uploading in blocks, as blobfs does; plain
// peerSDK lets the SDK pick (one Put Blob for files up to 256 MiB).
const peerSDKBlocks = peerSDK + "-blocks"

const (
	feedGPUs    = 4
	feedWorkers = 4 // DataLoader workers per GPU
	feedDir     = "feed"
	ckptDir     = "ckpt"
	// stallLimit is where a feed stops being sustainable; each probe
	// raises the demand by feedStep.
	stallLimit = 0.05
	feedStep   = 1.4
)

// feedReport is the section the feed benchmark adds to BENCHMARKS.md.
type feedReport struct {
	ceiling float64 // raw SDK parallel download, bytes/s
	demand  float64
	rows    []feedRow
	ckpt    []ckptRow
	restore []restoreRow
}

type feedRow struct {
	system      string
	epochs      []feed.Epoch
	sustainable float64 // bytes/s; 0 when not measured
	steps       []feed.Epoch
	perEpoch    []string // per epoch: the daemon's backend requests (getStats) and CPU
	err         string
}

type ckptRow struct {
	system        string
	save, restore time.Duration
	saveNote, err string
	bytes         int64
}

func (e *env) seedFeed(ctx context.Context, fz feedSizes) ([]feed.Shard, error) {
	shards := make([]feed.Shard, fz.Shards)
	for i := range shards {
		shards[i] = feed.Shard{Name: fmt.Sprintf("%s/shard-%05d.tar", feedDir, i), Size: fz.ShardBytes}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, s := range shards {
		g.Go(func() error {
			buf := make([]byte, s.Size)
			if _, err := io.ReadFull(randomReader(uint64(9000+i)), buf); err != nil {
				return err
			}
			_, err := e.client.UploadBuffer(gctx, container, s.Name, buf, &azblob.UploadBufferOptions{BlockSize: 8 << 20, Concurrency: 4})
			return err
		})
	}
	return shards, g.Wait()
}

// sdkSource reads shards with the raw SDK into memory: the backend ceiling
// a data loader could reach with no filesystem at all.
func (e *env) sdkSource() feed.Source {
	return feed.SourceFunc(func(ctx context.Context, name string, buf []byte) (int64, error) {
		return e.client.DownloadBuffer(ctx, container, name, buf, &azblob.DownloadBufferOptions{BlockSize: 8 << 20, Concurrency: 4})
	})
}

// dirSource reads shards as files under dir, as a data loader does.
func dirSource(dir string) feed.Source {
	return feed.SourceFunc(func(ctx context.Context, name string, buf []byte) (int64, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		defer f.Close()
		n, err := io.ReadFull(f, buf)
		return int64(n), err
	})
}

// measureCeiling downloads every shard once with the raw SDK, 16 at a time.
func (e *env) measureCeiling(ctx context.Context, shards []feed.Shard) (float64, error) {
	t0 := time.Now()
	var total int64
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, s := range shards {
		g.Go(func() error {
			buf := make([]byte, s.Size)
			n, err := e.client.DownloadBuffer(gctx, container, s.Name, buf, &azblob.DownloadBufferOptions{BlockSize: 8 << 20, Concurrency: 2})
			mu.Lock()
			total += n
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return float64(total) / time.Since(t0).Seconds(), nil
}

// runFeed runs the GPU-feed benchmark for every selected peer.
func (e *env) runFeed(ctx context.Context, fz feedSizes, selected []string) (*feedReport, error) {
	logf("== gpu feed: seeding %d × %s shards", fz.Shards, human(fz.ShardBytes))
	shards, err := e.seedFeed(ctx, fz)
	if err != nil {
		return nil, fmt.Errorf("seed feed: %w", err)
	}
	r := &feedReport{}
	if r.ceiling, err = e.measureCeiling(ctx, shards); err != nil {
		return nil, fmt.Errorf("backend ceiling: %w", err)
	}
	r.demand = 0.7 * r.ceiling
	logf("backend ceiling %.0f MB/s; demand %.0f MB/s", r.ceiling/1e6, r.demand/1e6)
	cfg := feed.Config{Shards: shards, GPUs: feedGPUs, Workers: feedWorkers, Demand: r.demand, Seed: 42}

	type system struct {
		name     string
		peer     string
		prefetch bool
	}
	systems := []system{
		{"blobfs + prefetch", peerBlobfs, true},
		{"blobfs", peerBlobfs, false},
		{"rclone", peerRclone, false},
		{"raw SDK into memory", peerSDK, false},
	}
	for _, s := range systems {
		if !slices.Contains(selected, s.peer) || (s.peer == peerRclone && e.rcloneBin == "") {
			continue
		}
		logf("== gpu feed: %s", s.name)
		row := feedRow{system: s.name}
		if err := e.feedSystem(ctx, cfg, s.peer, s.prefetch, &row); err != nil {
			row.err = err.Error()
			logf("%s: %v", s.name, err)
		}
		r.rows = append(r.rows, row)
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
	}
	return r, nil
}

func (e *env) feedSystem(ctx context.Context, cfg feed.Config, peer string, prefetch bool, row *feedRow) error {
	src := e.sdkSource()
	var m *mounted
	if peer != peerSDK {
		var err error
		if m, err = e.mount(ctx, peer); err != nil {
			return err
		}
		defer m.unmount()
		src = dirSource(m.dir)
	}
	var warm *exec.Cmd
	if prefetch {
		// As the init container / job start would: warm the dataset in
		// epoch 1's order while the job starts reading.
		manifest := filepath.Join(e.work, "epoch1.txt")
		var lines []string
		for _, s := range cfg.Order(1) {
			lines = append(lines, filepath.Join(m.dir, s.Name))
		}
		if err := os.WriteFile(manifest, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		warm = exec.CommandContext(ctx, e.blobfsBin, "prefetch", "--manifest", manifest, "--parallel", strconv.Itoa(*flagWarmPar))
		warm.Stdout, warm.Stderr = io.Discard, io.Discard
	}
	for epoch := 1; epoch <= 2; epoch++ {
		dropCaches()
		var before map[string]float64
		stopProfile, cpu0 := func() {}, -1.0
		if m != nil {
			before, cpu0 = m.scrape(), m.cpuSeconds()
			stopProfile = m.startProfile(fmt.Sprintf("feed-%s-epoch%d", strings.ReplaceAll(row.system, " ", ""), epoch))
		}
		if epoch == 1 && warm != nil {
			// Started with the epoch, after the page cache was dropped:
			// started before, it had a head start of however long the drop
			// took, and the epoch's counters missed what it fetched then.
			if err := warm.Start(); err != nil {
				return fmt.Errorf("blobfs prefetch: %w", err)
			}
		}
		logf("epoch %d: starting", epoch)
		ep, err := feed.Run(ctx, cfg, epoch, src)
		stopProfile()
		if err != nil {
			return err
		}
		logf("epoch %d: %v", epoch, ep)
		row.epochs = append(row.epochs, ep)
		if m != nil {
			// What the daemon asked of the backend, so a stall can be told
			// apart: metadata round trips, small ranges, or plain bandwidth;
			// and its CPU, which on a small machine is the backend's too.
			var parts []string
			if st := m.getStats(before); st != "" {
				parts = append(parts, st)
			}
			if cpu0 >= 0 {
				parts = append(parts, fmt.Sprintf("daemon %.2f CPU-s", m.cpuSeconds()-cpu0))
			}
			if len(parts) > 0 {
				note := fmt.Sprintf("epoch %d %s", epoch, strings.Join(parts, "; "))
				logf("%s", note)
				row.perEpoch = append(row.perEpoch, note)
			}
		}
	}
	if warm != nil {
		if err := warm.Wait(); err != nil {
			return fmt.Errorf("blobfs prefetch: %w", err)
		}
	}
	best, steps, err := feed.Sustainable(ctx, cfg, cfg.Demand, feedStep, stallLimit, 6, 2, src, func(int) { dropCaches() })
	row.sustainable, row.steps = best, steps
	return err
}

// runCheckpoint saves CkptFiles × CkptBytes in parallel with fsync and
// restores them on a fresh mount, for each peer, against the raw SDK's
// parallel upload and download.
func (e *env) runCheckpoint(ctx context.Context, fz feedSizes, selected []string) []ckptRow {
	var rows []ckptRow
	for _, p := range []string{peerBlobfs, peerRclone, peerSDK, peerSDKBlocks} {
		if !slices.Contains(selected, strings.TrimSuffix(p, "-blocks")) || (p == peerRclone && e.rcloneBin == "") {
			continue
		}
		logf("== checkpoint save/restore: %s", p)
		row := ckptRow{system: p, bytes: int64(fz.CkptFiles) * fz.CkptBytes}
		if err := e.checkpointCycle(ctx, fz, p, &row); err != nil {
			row.err = err.Error()
			logf("%s: %v", p, err)
		}
		rows = append(rows, row)
	}
	return rows
}

func (e *env) checkpointCycle(ctx context.Context, fz feedSizes, peer string, row *ckptRow) error {
	prefix := fmt.Sprintf("%s/%s-%d", ckptDir, peer, time.Now().UnixNano())
	names := make([]string, fz.CkptFiles)
	sums := make([][32]byte, fz.CkptFiles)
	payload := make([][]byte, fz.CkptFiles)
	for i := range names {
		names[i] = fmt.Sprintf("%s/rank-%d.pt", prefix, i)
		payload[i] = make([]byte, fz.CkptBytes)
		if _, err := io.ReadFull(randomReader(uint64(7000+i)), payload[i]); err != nil {
			return err
		}
		sums[i] = sha256.Sum256(payload[i])
	}
	g, gctx := errgroup.WithContext(ctx)
	switch peer {
	case peerSDK, peerSDKBlocks:
		t0 := time.Now()
		for i := range names {
			g.Go(func() error {
				if peer == peerSDKBlocks {
					_, err := e.client.UploadStream(gctx, container, names[i], bytes.NewReader(payload[i]), &azblob.UploadStreamOptions{BlockSize: 8 << 20, Concurrency: 16})
					return err
				}
				_, err := e.client.UploadBuffer(gctx, container, names[i], payload[i], &azblob.UploadBufferOptions{BlockSize: 8 << 20, Concurrency: 16})
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		row.save = time.Since(t0)
		row.saveNote = "UploadBuffer, files in parallel (one Put Blob per file up to 256 MiB, else 8 MiB blocks × 16)"
		if peer == peerSDKBlocks {
			row.saveNote = "UploadStream: 8 MiB Put Block × 16 per file + Put Block List, files in parallel (blobfs's method)"
		}
		var err error
		row.restore, err = restoreVerified(ctx, names, sums, func(ctx context.Context, name string) ([]byte, error) {
			buf := make([]byte, fz.CkptBytes)
			_, err := e.client.DownloadBuffer(ctx, container, name, buf, &azblob.DownloadBufferOptions{BlockSize: 8 << 20, Concurrency: 16})
			return buf, err
		})
		return err
	}

	m, err := e.mountRW(ctx, peer)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(m.dir, prefix), 0o755); err != nil {
		m.unmount()
		return err
	}
	t0 := time.Now()
	for i := range names {
		g.Go(func() error {
			f, err := os.Create(filepath.Join(m.dir, names[i]))
			if err != nil {
				return err
			}
			for off := 0; off < len(payload[i]); off += 1 << 20 {
				if _, err := f.Write(payload[i][off:min(len(payload[i]), off+1<<20)]); err != nil {
					f.Close()
					return err
				}
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		})
	}
	err = g.Wait()
	row.save = time.Since(t0)
	if err != nil {
		m.unmount()
		return err
	}
	if peer == peerRclone {
		// rclone returns from close before the upload (its VFS cache
		// writes back later): count until every blob is in the container.
		if err := e.waitBlobs(ctx, names, fz.CkptBytes, 10*time.Minute); err != nil {
			m.unmount()
			return err
		}
		row.save = time.Since(t0)
		row.saveNote = "until every blob is in the container (rclone's close returns before it uploads)"
	} else {
		row.saveNote = "write 1 MiB × n, fsync, close (durable when close returns)"
	}
	m.unmount()

	fresh, err := e.mount(ctx, peer)
	if err != nil {
		return err
	}
	defer fresh.unmount()
	row.restore, err = restoreVerified(ctx, names, sums, func(_ context.Context, name string) ([]byte, error) {
		return os.ReadFile(filepath.Join(fresh.dir, name))
	})
	return err
}

// restoreVerified drops the page cache, reads every name in parallel with
// read, checks each against its SHA-256 and returns how long it took.
func restoreVerified(ctx context.Context, names []string, sums [][32]byte, read func(context.Context, string) ([]byte, error)) (time.Duration, error) {
	dropCaches()
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for i, name := range names {
		g.Go(func() error {
			b, err := read(gctx, name)
			if err != nil {
				return err
			}
			if sha256.Sum256(b) != sums[i] {
				return fmt.Errorf("%s: restored bytes differ", name)
			}
			return nil
		})
	}
	err := g.Wait()
	return time.Since(t0), err
}

// waitBlobs waits until every name is a blob of size bytes.
func (e *env) waitBlobs(ctx context.Context, names []string, size int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, n := range names {
		for {
			p, err := e.client.ServiceClient().NewContainerClient(container).NewBlobClient(n).GetProperties(ctx, nil)
			if err == nil && p.ContentLength != nil && *p.ContentLength == size {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not uploaded after %v", n, limit)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// renderFeed is the markdown section of the feed and checkpoint results.
func (r *feedReport) render(fz feedSizes) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### GPU feed: %d GPUs × %d DataLoader workers, %d × %s shards, shuffled per epoch\n\n", feedGPUs, feedWorkers, fz.Shards, human(fz.ShardBytes))
	fmt.Fprintf(&b, "Backend ceiling (raw SDK, 16 parallel downloads): **%.0f MB/s**; demand 0.7× = %.0f MB/s. Stall = time the GPUs waited / epoch time; page cache dropped before every epoch.\n\n", r.ceiling/1e6, r.demand/1e6)
	b.WriteString("Stall after the first shard leaves out each GPU's wait for its first shard (the cold start, which these short epochs weigh far more than a real job's would). The sustainable feed steps the demand up (or down) by 1.4× until the stall passes 5%, then bisects that step twice.\n\n")
	b.WriteString("| system | epoch 1 stall | epoch 2 stall | after the first shard, epoch 1 / 2 | epoch 1 first shard | sustainable feed (stall ≤ 5%) | notes |\n|---|---:|---:|---:|---:|---:|---|\n")
	var rcloneRate float64
	for _, row := range r.rows {
		if row.system == "rclone" {
			rcloneRate = row.sustainable
		}
	}
	for _, row := range r.rows {
		cells := []string{"–", "–", "–", "–"}
		if len(row.epochs) > 0 {
			cells[0] = fmt.Sprintf("%.2f%%", 100*row.epochs[0].Stall)
			cells[2] = fmt.Sprintf("%.2f%%", 100*row.epochs[0].SteadyStall)
			cells[3] = row.epochs[0].FirstShard.Round(time.Millisecond).String()
		}
		if len(row.epochs) > 1 {
			cells[1] = fmt.Sprintf("%.2f%%", 100*row.epochs[1].Stall)
			cells[2] += fmt.Sprintf(" / %.2f%%", 100*row.epochs[1].SteadyStall)
		}
		rate := "–"
		if row.sustainable > 0 {
			rate = fmt.Sprintf("%.0f MB/s", row.sustainable/1e6)
			if rcloneRate > 0 && row.system != "rclone" {
				rate += fmt.Sprintf(" (%.2f× rclone)", row.sustainable/rcloneRate)
			}
		} else if n := len(row.steps); n > 0 {
			rate = fmt.Sprintf("< %.0f MB/s", row.steps[n-1].Demand/1e6)
		}
		var steps []string
		for _, s := range row.steps {
			steps = append(steps, fmt.Sprintf("%.0f MB/s→%.1f%% (%.1f%%)", s.Demand/1e6, 100*s.Stall, 100*s.SteadyStall))
		}
		note := row.err
		if note == "" {
			parts := slices.Clone(row.perEpoch)
			if len(steps) > 0 {
				parts = append(parts, "probe stalls (after the first shard): "+strings.Join(steps, ", "))
			}
			note = strings.Join(parts, "; ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", row.system, cells[0], cells[1], cells[2], cells[3], rate, strings.ReplaceAll(firstLineMax(note, 800), "|", "/"))
	}
	b.WriteString("\n")
	if len(r.ckpt) > 0 {
		c0 := r.ckpt[0]
		fmt.Fprintf(&b, "### Checkpoint cycle: %d files × %s saved in parallel with fsync, restored on a fresh mount\n\n", c0.bytes/fz.CkptBytes, human(fz.CkptBytes))
		b.WriteString("| system | save s | save MB/s | restore s | restore MB/s | notes |\n|---|---:|---:|---:|---:|---|\n")
		for _, c := range r.ckpt {
			if c.err != "" {
				fmt.Fprintf(&b, "| %s | error | | | | %s |\n", c.system, strings.ReplaceAll(firstLine(c.err), "|", "/"))
				continue
			}
			fmt.Fprintf(&b, "| %s | %.2f | %.0f | %.2f | %.0f | %s |\n", c.system, c.save.Seconds(), float64(c.bytes)/c.save.Seconds()/1e6,
				c.restore.Seconds(), float64(c.bytes)/c.restore.Seconds()/1e6, c.saveNote)
		}
		b.WriteString("\n")
	}
	if len(r.restore) > 0 {
		b.WriteString(renderRestore(r.restore, fz.RestoreShard))
	}
	return b.String()
}

// randomReader is a reproducible stream of incompressible bytes.
func randomReader(seed uint64) io.Reader {
	return rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 0xfe})
}

// restoreRow is one way of restoring the 16-file checkpoint.
type restoreRow struct {
	system string
	took   time.Duration
	note   string
	err    string
}

// safetensorsFile is a valid one-tensor safetensors file of about size
// bytes: the prefetch planner checks headers and sizes, as it would on a
// real Hugging Face checkpoint.
func safetensorsFile(tensor string, size int64, seed uint64) []byte {
	n := size - 256
	header := fmt.Sprintf(`{"%s":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}`, tensor, n, n)
	for len(header)%8 != 0 {
		header += " "
	}
	out := make([]byte, 8+len(header)+int(n))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	copy(out[8:], header)
	_, _ = io.ReadFull(randomReader(seed), out[8+len(header):])
	return out
}

// seedRestore uploads a Hugging Face Trainer checkpoint of 16 safetensors
// shards (and an older, incomplete one that prefetch must skip).
func (e *env) seedRestore(ctx context.Context, shardBytes int64) (dir string, names []string, err error) {
	dir = "restore/run"
	ck := dir + "/checkpoint-200"
	index := map[string]any{"metadata": map[string]any{"total_size": 16 * shardBytes}}
	weights := map[string]string{}
	for i := range 16 {
		name := fmt.Sprintf("model-%05d-of-00016.safetensors", i+1)
		weights[fmt.Sprintf("layer%d.weight", i)] = name
		names = append(names, ck+"/"+name)
	}
	index["weight_map"] = weights
	indexJSON, _ := json.Marshal(index)
	files := map[string][]byte{
		ck + "/model.safetensors.index.json": indexJSON,
		ck + "/trainer_state.json":           []byte(`{"global_step": 200, "log_history": []}`),
		// A newer checkpoint that was still being written: no trainer_state.json.
		dir + "/checkpoint-300/model-00001-of-00016.safetensors": safetensorsFile("layer0.weight", 1<<20, 1),
	}
	for i, n := range names {
		files[n] = safetensorsFile(fmt.Sprintf("layer%d.weight", i), shardBytes, uint64(5000+i))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for name, data := range files {
		g.Go(func() error {
			_, err := e.client.UploadBuffer(gctx, container, name, data, nil)
			return err
		})
	}
	return dir, names, g.Wait()
}

// runRestore restores the checkpoint cold: plain parallel reads on a fresh
// mount, `blobfs prefetch --checkpoint` then reads, and the raw SDK.
func (e *env) runRestore(ctx context.Context, shardBytes int64, selected []string) []restoreRow {
	logf("== checkpoint restore: seeding 16 × %s", human(shardBytes))
	dir, names, err := e.seedRestore(ctx, shardBytes)
	if err != nil {
		return []restoreRow{{system: "seed", err: err.Error()}}
	}
	readAll := func(root string) error {
		g, _ := errgroup.WithContext(ctx)
		for _, n := range names {
			g.Go(func() error {
				f, err := os.Open(filepath.Join(root, n))
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
				return err
			})
		}
		return g.Wait()
	}
	var rows []restoreRow
	try := func(system string, fn func() (string, error)) {
		logf("restore: %s", system)
		dropCaches()
		t0 := time.Now()
		note, err := fn()
		row := restoreRow{system: system, took: time.Since(t0), note: note}
		if err != nil {
			row.err = err.Error()
		}
		rows = append(rows, row)
	}
	for _, p := range []string{peerBlobfs, peerRclone} {
		if !slices.Contains(selected, p) || (p == peerRclone && e.rcloneBin == "") {
			continue
		}
		try(p+": plain reads", func() (string, error) {
			m, err := e.mount(ctx, p)
			if err != nil {
				return "", err
			}
			defer m.unmount()
			return "16 readers, a fresh mount and cache", readAll(m.dir)
		})
	}
	if slices.Contains(selected, peerBlobfs) {
		try("blobfs: prefetch --checkpoint, then reads", func() (string, error) {
			m, err := e.mount(ctx, peerBlobfs)
			if err != nil {
				return "", err
			}
			defer m.unmount()
			out, err := exec.CommandContext(ctx, e.blobfsBin, "prefetch", "--checkpoint", filepath.Join(m.dir, dir), "--parallel", "32").CombinedOutput()
			if err != nil {
				return "", fmt.Errorf("blobfs prefetch: %v: %s", err, out)
			}
			return "prefetch picked checkpoint-200 (skipping the incomplete checkpoint-300), time includes both", readAll(m.dir)
		})
	}
	if slices.Contains(selected, peerSDK) {
		try("raw SDK parallel download", func() (string, error) {
			g, gctx := errgroup.WithContext(ctx)
			for _, n := range names {
				g.Go(func() error {
					buf := make([]byte, shardBytes)
					_, err := e.client.DownloadBuffer(gctx, container, n, buf, &azblob.DownloadBufferOptions{BlockSize: 8 << 20, Concurrency: 4})
					return err
				})
			}
			return "DownloadBuffer 8 MiB × 4 per file, 16 files in parallel, into memory", g.Wait()
		})
	}
	return rows
}

func renderRestore(rows []restoreRow, shardBytes int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Checkpoint restore: Hugging Face checkpoint of 16 × %s safetensors shards, cold\n\n", human(shardBytes))
	b.WriteString("| restore | s | MB/s | vs raw SDK | notes |\n|---|---:|---:|---:|---|\n")
	var sdk time.Duration
	for _, r := range rows {
		if strings.HasPrefix(r.system, "raw SDK") && r.err == "" {
			sdk = r.took
		}
	}
	for _, r := range rows {
		if r.err != "" {
			fmt.Fprintf(&b, "| %s | error | | | %s |\n", r.system, strings.ReplaceAll(firstLine(r.err), "|", "/"))
			continue
		}
		vs := "–"
		if sdk > 0 {
			vs = fmt.Sprintf("%.2f×", sdk.Seconds()/r.took.Seconds())
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.0f | %s | %s |\n", r.system, r.took.Seconds(), float64(16*shardBytes)/r.took.Seconds()/1e6, vs, r.note)
	}
	b.WriteString("\n")
	return b.String()
}
