package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blobfs/blobfs/blob"
)

// source is a fake backend for one object: deterministic bytes, counted
// calls and bytes, and optional blocking (gate) and failure (err).
type source struct {
	size int64
	seed uint64

	calls, bytes atomic.Int64
	// cancelledFetches counts fetches that returned with their ctx done.
	cancelledFetches atomic.Int64
	started          chan struct{} // if set, receives one value per fetch start

	mu   sync.Mutex
	gate chan struct{} // GUARDED_BY(mu); fetches wait for it to close
	err  error         // GUARDED_BY(mu); returned by every fetch
}

func newSource(size int64, seed uint64) *source { return &source{size: size, seed: seed} }

// fill writes the expected bytes of [off, off+len(p)) into p.
func fillPattern(seed uint64, p []byte, off int64) {
	for i := range p {
		x := uint64(off+int64(i))*0x9E3779B97F4A7C15 + seed
		p[i] = byte(x >> 56)
	}
}

func (s *source) want(off, n int64) []byte {
	p := make([]byte, n)
	fillPattern(s.seed, p, off)
	return p
}

func (s *source) fetch(ctx context.Context, p []byte, off int64) (int, error) {
	s.calls.Add(1)
	if s.started != nil {
		s.started <- struct{}{}
	}
	s.mu.Lock()
	gate, err := s.gate, s.err
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			s.cancelledFetches.Add(1)
			return 0, ctx.Err()
		}
	}
	if ctx.Err() != nil {
		s.cancelledFetches.Add(1)
	}
	if err != nil {
		return 0, err
	}
	if off >= s.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), s.size-off)
	fillPattern(s.seed, p[:n], off)
	s.bytes.Add(n)
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

func (s *source) setGate(g chan struct{}) {
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
}

func (s *source) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// object returns the Object the tests read; Validate accepts.
func object(name string, size int64) Object {
	return Object{
		Account: "acct", Container: "data", Name: name, ETag: `"0x1"`, Size: size,
		Credential: "reader",
		Validate:   func(context.Context) error { return nil },
	}
}

// testBS is the block size of most tests.
const testBS = 64 << 10

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openCache opens a cache closed at the end of the test.
func openCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	if cfg.BlockSize == 0 {
		cfg.BlockSize = testBS
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	c, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads the whole object in reqSize requests and checks the bytes.
func readAll(t testing.TB, c *Cache, obj Object, src *source, reqSize int) {
	t.Helper()
	buf := make([]byte, reqSize)
	for off := int64(0); off < obj.Size; off += int64(reqSize) {
		n, err := c.ReadAt(context.Background(), obj, src.fetch, buf, off)
		if err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == obj.Size) {
			t.Fatalf("ReadAt(%s, %d): n=%d err=%v", obj.Name, off, n, err)
		}
		if !bytes.Equal(buf[:n], src.want(off, int64(n))) {
			t.Fatalf("ReadAt(%s, %d): wrong bytes", obj.Name, off)
		}
	}
}

// du is the space the directory occupies, like du(1).
func du(t testing.TB, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by a concurrent eviction
			}
			return err
		}
		total += stBytes(p)
		return nil
	})
	if err != nil {
		t.Fatalf("du: %v", err)
	}
	return total
}

// checkLedger rescans the directory and checks the ledger agreed with it.
func checkLedger(t testing.TB, c *Cache) {
	t.Helper()
	d := c.disk
	if err := d.lock(); err != nil {
		t.Fatal(err)
	}
	before := d.used
	if err := d.reconcileLocked(); err != nil {
		d.unlock()
		t.Fatal(err)
	}
	after := d.used
	d.unlock()
	if before != after {
		t.Errorf("ledger said %d bytes in use, a rescan finds %d", before, after)
	}
	if after > d.budget {
		t.Errorf("%d bytes in use exceed the budget %d", after, d.budget)
	}
}

// eventually polls cond without a deadline of its own (the test binary's
// -timeout is the bound); it asserts an outcome, never a duration.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i%1000 == 999 {
			t.Logf("still waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// ramWait waits until every fetch has been stored and the RAM tier has
// applied its pending Sets.
func (c *Cache) ramWait() {
	for {
		c.fmu.Lock()
		n := len(c.flights)
		c.fmu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if c.ram != nil {
		c.ram.Wait()
	}
}

var errInjected = fmt.Errorf("injected: %w", blob.ErrUnavailable)

func mustFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
