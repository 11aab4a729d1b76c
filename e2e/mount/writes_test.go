package mounte2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// Checkpoint-grade writes (issue #6), through the real binary and a real
// kernel mount on Azurite.

// sdkContainer is the raw SDK on the harness's Azurite: what blobfs's own
// Store does not expose (uncommitted blocks, copy properties).
func sdkContainer(t *testing.T, container string) *azblobContainer {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(az.Account(), az.Key())
	if err != nil {
		t.Fatal(err)
	}
	tr := az.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	c, err := azblob.NewClientWithSharedKeyCredential(az.BlobEndpoint(), cred, &azblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: tr}, Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &azblobContainer{c: c, name: container}
}

type azblobContainer struct {
	c    *azblob.Client
	name string
}

func (a *azblobContainer) blockBlob(name string) *blockblob.Client {
	return a.c.ServiceClient().NewContainerClient(a.name).NewBlockBlobClient(name)
}

// uncommittedBlocks is how many staged, uncommitted blocks blob name has.
func (a *azblobContainer) uncommittedBlocks(t *testing.T, name string) int {
	t.Helper()
	resp, err := a.blockBlob(name).GetBlockList(context.Background(), blockblob.BlockListTypeUncommitted, nil)
	if err != nil {
		t.Fatalf("get uncommitted block list of %s: %v", name, err)
	}
	return len(resp.UncommittedBlocks)
}

// copied reports whether blob name was made by a server-side Copy Blob
// (the service records a copy id on the destination).
func (a *azblobContainer) copied(t *testing.T, name string) bool {
	t.Helper()
	p, err := a.blockBlob(name).GetProperties(context.Background(), nil)
	if err != nil {
		t.Fatalf("properties of %s: %v", name, err)
	}
	return p.CopyID != nil && *p.CopyID != ""
}

// writeStream writes size pseudo-random bytes (seed) to f in 1 MiB writes
// and returns their SHA-256. before runs once, before the last MiB.
func writeStream(t *testing.T, f *os.File, seed uint64, size int64, before func()) [32]byte {
	t.Helper()
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(randomStream(seed), size), h)
	buf := make([]byte, 1<<20)
	var done int64
	for {
		if before != nil && size-done <= int64(len(buf)) {
			before()
			before = nil
		}
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if _, werr := f.Write(buf[:n]); werr != nil {
				t.Fatalf("write at %d: %v", done, werr)
			}
			done += int64(n)
		}
		if err != nil {
			break
		}
	}
	return [32]byte(h.Sum(nil))
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return [32]byte(h.Sum(nil))
}

// A large sequential write uploads its blocks while the application is
// still writing; close commits; a fresh mount reads the same bytes.
func TestLargeWriteStreamsBlocksBeforeClose(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	sdk := sdkContainer(t, container)
	size := testenv.Pick[int64](96<<20, 4<<30)
	m := mountT(t, container, mountConfig{Args: []string{"--block-size-mb", "4"}})
	if err := os.Mkdir(m.Path("ckpt"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(m.Path("ckpt", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	staged := 0
	sum := writeStream(t, f, 61, size, func() {
		// Background uploads trail the writer by at most a few blocks.
		deadline := time.Now().Add(time.Minute)
		for staged = sdk.uncommittedBlocks(t, "ckpt/model.safetensors"); staged < int(size>>20)/4/2 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			staged = sdk.uncommittedBlocks(t, "ckpt/model.safetensors")
		}
	})
	if want := int(size>>20) / 4 / 2; staged < want {
		t.Errorf("%d uncommitted blocks before close, want at least %d of %d: blocks must upload while the application writes", staged, want, size>>22)
	}
	if a, err := newStore(t, container).Stat(context.Background(), "ckpt/model.safetensors"); err != nil || a.Size != 0 {
		t.Errorf("before close the blob is %+v, %v; want the empty blob create made (readers never see a partial file)", a, err)
	}
	start := time.Now()
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("%d MiB: %d blocks staged before close; close took %v", size>>20, staged, time.Since(start))

	fresh := mountT(t, container, mountConfig{})
	if got := fileSHA(t, fresh.Path("ckpt", "model.safetensors")); got != sum {
		t.Fatal("SHA-256 through a fresh mount differs from what was written")
	}
}

// killDaemon SIGKILLs the mount daemon and cleans up the dead mount.
func killDaemon(t *testing.T, m *mount) {
	t.Helper()
	if err := syscall.Kill(m.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", m.PID, err)
	}
	waitExit(m.PID, 30*time.Second)
	if mi, ok := findMount(m.Dir); ok {
		forceUnmount(mi)
	}
}

// fsync's promise: once it returns, the data is in Blob, whatever happens
// to the daemon next. Before it, a crash leaves the old blob untouched.
func TestKillAfterFsyncKeepsDataBeforeKeepsOld(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	s := newStore(t, container)
	size := testenv.Pick[int64](24<<20, 512<<20)
	putBlob(t, s, "old.bin", []byte("the previous checkpoint"), nil)

	t.Run("after fsync", func(t *testing.T) {
		m := mountT(t, container, mountConfig{})
		f, err := os.Create(m.Path("synced.bin"))
		if err != nil {
			t.Fatal(err)
		}
		sum := writeStream(t, f, 7, size, nil)
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync: %v", err)
		}
		killDaemon(t, m)
		f.Close()
		_, data := readBlob(t, s, "synced.bin")
		if sha256.Sum256(data) != sum {
			t.Fatalf("after kill -9 following fsync: blob has %d bytes, not what was written (%d)", len(data), size)
		}
	})
	t.Run("before fsync", func(t *testing.T) {
		m := mountT(t, container, mountConfig{})
		f, err := os.OpenFile(m.Path("old.bin"), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		writeStream(t, f, 8, size, nil)
		killDaemon(t, m)
		f.Close()
		if _, data := readBlob(t, s, "old.bin"); string(data) != "the previous checkpoint" {
			t.Fatalf("after kill -9 before fsync: blob is %d bytes %q..., want the old content intact", len(data), data[:min(len(data), 32)])
		}
	})
}

// PyTorch DCP's save: shard files written in place, then .metadata.tmp
// written, fsynced, closed and renamed to .metadata. The result has
// exactly the final names, and no blob was made by a server-side copy.
func TestDCPSaveLeavesFinalNamesWithoutCopy(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	sdk := sdkContainer(t, container)
	m := mountT(t, container, mountConfig{})
	dir := m.Path("run", "step_200")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shard := testenv.Pick(3<<20, 64<<20)
	want := map[string][32]byte{}
	for rank := range 2 {
		name := fmt.Sprintf("__%d_0.distcp", rank)
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		want[name] = writeStream(t, f, uint64(100+rank), int64(shard), nil)
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	meta := pseudoRandom(9, 200<<10)
	f, err := os.Create(filepath.Join(dir, ".metadata.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(meta); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, ".metadata.tmp"), filepath.Join(dir, ".metadata")); err != nil {
		t.Fatal(err)
	}
	want[".metadata"] = sha256.Sum256(meta)

	page, err := newStore(t, container).List(context.Background(), blob.ListOptions{Prefix: "run/step_200/"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range page.Blobs {
		names = append(names, strings.TrimPrefix(b.Name, "run/step_200/"))
		if sdk.copied(t, b.Name) {
			t.Errorf("%s was made by a server-side copy", b.Name)
		}
	}
	if fmt.Sprint(names) != "[.metadata __0_0.distcp __1_0.distcp]" {
		t.Errorf("blobs = %v, want exactly the final names", names)
	}
	fresh := mountT(t, container, mountConfig{})
	for name, sum := range want {
		if fileSHA(t, fresh.Path("run", "step_200", name)) != sum {
			t.Errorf("%s differs through a fresh mount", name)
		}
	}
}

// TensorBoard and Ray append small records and flush each: the log's
// block list grows by blocks, not by flushes.
func TestAppendFlushCyclesStayUnderBlockLimit(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	m := mountT(t, container, mountConfig{Args: []string{"--block-size-mb", "1"}})
	cycles := testenv.Pick(1000, 20000)
	f, err := os.OpenFile(m.Path("events.out.tfevents"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	record := bytes.Repeat([]byte("x"), 1500)
	start := time.Now()
	for i := range cycles {
		line := fmt.Appendf(nil, "%08d %s\n", i, record[:1000+i%500])
		if _, err := f.Write(line); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		want.Write(line)
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync %d: %v", i, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d append+fsync cycles (%d bytes) in %v", cycles, want.Len(), time.Since(start))
	s := newStore(t, container)
	_, data := readBlob(t, s, "events.out.tfevents")
	if !bytes.Equal(data, want.Bytes()) {
		t.Fatalf("log has %d bytes, want %d", len(data), want.Len())
	}
	blocks, err := s.Blocks(context.Background(), "events.out.tfevents")
	if err != nil {
		t.Fatal(err)
	}
	if max := (want.Len() + 1<<20 - 1) >> 20; len(blocks) > max || len(blocks) >= blob.MaxBlockCount {
		t.Errorf("%d committed blocks for %d bytes of 1 MiB blocks after %d flushes, want <= %d", len(blocks), want.Len(), cycles, max)
	}
}

// With 10% of requests answered 503 and 5% of connections cut, a
// checkpoint save and restore loses nothing.
func TestCheckpointSurvivesFlakyBackend(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	proxy := azurite.NewFaultProxyT(t, az)
	args := []string{"--max-retries", "10", "--block-size-mb", "2"}
	m := mountT(t, container, mountConfig{Endpoint: proxy.BlobEndpoint(), Args: args})
	if err := os.Mkdir(m.Path("ckpt"), 0o755); err != nil {
		t.Fatal(err)
	}
	proxy.SetChaos(azurite.Chaos{Busy: 0.10, Reset: 0.05, Seed: 6})
	files := 8
	size := testenv.Pick[int64](6<<20, 128<<20)
	sums := make([][32]byte, files)
	start := time.Now()
	for i := range files {
		f, err := os.Create(m.Path("ckpt", fmt.Sprintf("shard-%d.pt", i)))
		if err != nil {
			t.Fatalf("create shard %d: %v", i, err)
		}
		sums[i] = writeStream(t, f, uint64(200+i), size, nil)
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync shard %d: %v", i, err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close shard %d: %v", i, err)
		}
	}
	saved := time.Since(start)
	fresh := mountT(t, container, mountConfig{Endpoint: proxy.BlobEndpoint(), Args: args})
	for i := range files {
		if fileSHA(t, fresh.Path("ckpt", fmt.Sprintf("shard-%d.pt", i))) != sums[i] {
			t.Errorf("shard %d differs after a save and restore through faults", i)
		}
	}
	faults := proxy.ChaosFaults()
	t.Logf("save %v, restore %v; %d×503 and %d cut connections injected over %d requests",
		saved, time.Since(start)-saved, faults.Busy, faults.Resets, proxy.Requests())
	if faults.Busy == 0 || faults.Resets == 0 {
		t.Errorf("the proxy injected %+v: the test did not exercise faults", faults)
	}
	proxy.SetChaos(azurite.Chaos{})
}

// A backend that is gone fails the close with EIO within the configured
// upload timeout, and the data is not reported as saved.
func TestDeadBackendFailsCloseWithEIO(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	proxy := azurite.NewFaultProxyT(t, az)
	m := mountT(t, container, mountConfig{Endpoint: proxy.BlobEndpoint(),
		Args: []string{"--upload-timeout", "5s", "--max-retries", "2", "--block-size-mb", "1"}})
	f, err := os.Create(m.Path("doomed.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := proxy.Close(); err != nil { // now a closed loopback port
		t.Fatal(err)
	}
	start := time.Now()
	var werr error
	for i := 0; i < 8 && werr == nil; i++ {
		_, werr = f.Write(pseudoRandom(uint64(i), 1<<20))
	}
	cerr := f.Close()
	took := time.Since(start)
	t.Logf("write error %v; close error %v; after %v", werr, cerr, took)
	err = cerr
	if werr != nil {
		err = werr
	}
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("writing to a dead backend: %v, want EIO", err)
	}
	if took > 3*time.Minute {
		t.Errorf("failing took %v: the upload timeout (5s) did not bound it", took)
	}
}

// fsx through the kernel: random writes, truncates, reads, fsyncs and
// reopens against an in-memory model; a fresh mount sees the model.
func TestRandomOperationsThroughMount(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	m := mountT(t, container, mountConfig{Args: []string{"--block-size-mb", "1"}})
	ops := testenv.Pick(400, 4000)
	rng := rand.New(rand.NewPCG(42, 43))
	const maxLen = 5 << 20
	var model []byte
	path := m.Path("fsx.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for op := range ops {
		switch k := rng.IntN(100); {
		case k < 45:
			off := rng.Int64N(maxLen)
			p := make([]byte, 1+rng.IntN(300<<10))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if _, err := f.WriteAt(p, off); err != nil {
				t.Fatalf("op %d: write: %v", op, err)
			}
			if end := int(off) + len(p); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[off:], p)
		case k < 55:
			size := rng.Int64N(maxLen)
			if err := f.Truncate(size); err != nil {
				t.Fatalf("op %d: truncate: %v", op, err)
			}
			if int(size) <= len(model) {
				model = model[:size]
			} else {
				model = append(model, make([]byte, int(size)-len(model))...)
			}
		case k < 80:
			off := rng.Int64N(maxLen)
			p := make([]byte, 1+rng.IntN(300<<10))
			n, err := f.ReadAt(p, off)
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("op %d: read: %v", op, err)
			}
			var want []byte
			if int(off) < len(model) {
				want = model[off:min(len(model), int(off)+len(p))]
			}
			if !bytes.Equal(p[:n], want) {
				t.Fatalf("op %d: read at %d: %d bytes, differ from the model's %d", op, off, n, len(want))
			}
		case k < 92:
			if err := f.Sync(); err != nil {
				t.Fatalf("op %d: fsync: %v", op, err)
			}
		default:
			if err := f.Close(); err != nil {
				t.Fatalf("op %d: close: %v", op, err)
			}
			if f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
				t.Fatalf("op %d: reopen: %v", op, err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := mountT(t, container, mountConfig{})
	got, err := os.ReadFile(fresh.Path("fsx.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		first := 0
		for first < min(len(got), len(model)) && got[first] == model[first] {
			first++
		}
		t.Fatalf("after %d ops a fresh mount reads %d bytes, the model has %d; first difference at %d", ops, len(got), len(model), first)
	}
}

// Two mounts (two nodes) write one file: the first close wins, the second
// gets ESTALE and its bytes are not committed.
func TestTwoMountsOneFileSecondCloseFails(t *testing.T) {
	requireHarness(t)
	container := newContainer(t)
	s := newStore(t, container)
	putBlob(t, s, "shared.json", []byte(`{"step": 0}`), nil)
	a := mountT(t, container, mountConfig{})
	b := mountT(t, container, mountConfig{})
	fa, err := os.OpenFile(a.Path("shared.json"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.OpenFile(b.Path("shared.json"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fa.WriteString(`{"step": "A"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.WriteString(`{"step": "B", "longer": true}`); err != nil {
		t.Fatal(err)
	}
	if err := fa.Close(); err != nil {
		t.Fatalf("first close: %v", err)
	}
	if err := fb.Close(); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("second close: %v, want ESTALE", err)
	}
	if _, data := readBlob(t, s, "shared.json"); string(data) != `{"step": "A"}` {
		t.Fatalf("blob = %q, want the first writer's whole content", data)
	}
}
