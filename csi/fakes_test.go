package csi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/mountinfo"
)

// fakeMounter is an in-memory Mounter over real directories: the node's
// MkdirAll/Remove and sanity's path checks see real paths, and nothing is
// mounted, so it needs no root.
type fakeMounter struct {
	mu     sync.Mutex
	mounts map[string]*fakeMount // GUARDED_BY(mu), by path
	calls  []string              // GUARDED_BY(mu), "op path"

	// beforeMount, if set, runs at the start of MountVolume (outside mu):
	// tests block in it to hold a volume's lock.
	beforeMount func(target string)
}

type fakeMount struct {
	volume   bool // a blobfs mount; false: a bind mount
	source   string
	readOnly bool
	spec     MountSpec
	stale    bool
}

func newFakeMounter() *fakeMounter { return &fakeMounter{mounts: map[string]*fakeMount{}} }

func (f *fakeMounter) record(op, path string) {
	f.calls = append(f.calls, op+" "+path)
}

func (f *fakeMounter) MountVolume(_ context.Context, target string, spec MountSpec) error {
	if f.beforeMount != nil {
		f.beforeMount(target)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("mount", target)
	if m, ok := f.mounts[target]; ok && !m.stale {
		if fingerprint(m.spec.Config) != fingerprint(spec.Config) {
			return status.Errorf(codes.FailedPrecondition, "%s is mounted with other settings", target)
		}
		m.spec = spec
		return nil
	}
	if _, err := os.Stat(target); err != nil {
		return fmt.Errorf("fake mount: %w", err)
	}
	f.mounts[target] = &fakeMount{volume: true, spec: spec, readOnly: spec.Config.FS.ReadOnly}
	return nil
}

func (f *fakeMounter) RemountVolume(_ context.Context, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("remount", target)
	m, ok := f.mounts[target]
	if !ok || !m.volume {
		return status.Errorf(codes.FailedPrecondition, "no settings recorded for %s", target)
	}
	m.stale = false
	return nil
}

func (f *fakeMounter) UnmountVolume(_ context.Context, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("unmount", target)
	delete(f.mounts, target)
	return nil
}

func (f *fakeMounter) Bind(_ context.Context, source, target string, readOnly bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("bind", target)
	src, ok := f.mounts[source]
	if !ok || src.stale {
		return fmt.Errorf("fake bind: source %s is not a live mount", source)
	}
	if _, err := os.Stat(target); err != nil {
		return fmt.Errorf("fake bind: %w", err)
	}
	f.mounts[target] = &fakeMount{source: source, readOnly: readOnly}
	return nil
}

func (f *fakeMounter) Unbind(_ context.Context, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("unbind", target)
	delete(f.mounts, target)
	return nil
}

func (f *fakeMounter) State(_ context.Context, path string) (MountState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok := f.mounts[path]; ok {
		if m.stale {
			return Stale, nil
		}
		return Mounted, nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return NotExist, nil
	} else if err != nil {
		return NotExist, err
	}
	return NotMounted, nil
}

func (f *fakeMounter) Probe(context.Context) error { return nil }

// get returns a copy of the mount at path.
func (f *fakeMounter) get(path string) (fakeMount, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[path]
	if !ok {
		return fakeMount{}, false
	}
	return *m, true
}

// setStale marks the mount at path as if its server died.
func (f *fakeMounter) setStale(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts[path].stale = true
}

// count returns how many calls of op were made.
func (f *fakeMounter) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if len(c) > len(op) && c[:len(op)+1] == op+" " {
			n++
		}
	}
	return n
}

// volumeMounts counts the live blobfs mounts.
func (f *fakeMounter) volumeMounts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.mounts {
		if m.volume {
			n++
		}
	}
	return n
}

var _ Mounter = (*fakeMounter)(nil)

// mountPoints lists every mount point under dir (dir itself included).
func mountPoints(dir string) ([]string, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, strings.TrimSuffix(dir, "/")+"/") {
			out = append(out, m.Point)
		}
	}
	return out, nil
}

// fakeStorage holds containers per account for fake ContainerAdmins.
type fakeStorage struct {
	mu         sync.Mutex
	containers map[string]map[string]bool // GUARDED_BY(mu), account → names
	creds      []Credentials              // GUARDED_BY(mu), as handed to the factory
}

func newFakeStorage() *fakeStorage { return &fakeStorage{containers: map[string]map[string]bool{}} }

func (s *fakeStorage) admins(_ context.Context, account string, creds Credentials) (ContainerAdmin, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds = append(s.creds, creds)
	return &fakeAdmin{s: s, account: account}, nil
}

func (s *fakeStorage) has(account, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.containers[account][name]
}

func (s *fakeStorage) add(account, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.containers[account] == nil {
		s.containers[account] = map[string]bool{}
	}
	s.containers[account][name] = true
}

type fakeAdmin struct {
	s       *fakeStorage
	account string
}

func (a *fakeAdmin) Create(_ context.Context, name string) error {
	if err := validateContainer(name); err != nil {
		return fmt.Errorf("fake: %w: %w", blob.ErrInvalid, err)
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if a.s.containers[a.account] == nil {
		a.s.containers[a.account] = map[string]bool{}
	}
	if a.s.containers[a.account][name] {
		return fmt.Errorf("fake: container %s: %w", name, blob.ErrExists)
	}
	a.s.containers[a.account][name] = true
	return nil
}

func (a *fakeAdmin) Delete(_ context.Context, name string) error {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if !a.s.containers[a.account][name] {
		return fmt.Errorf("fake: container %s: %w", name, blob.ErrContainerNotFound)
	}
	delete(a.s.containers[a.account], name)
	return nil
}

func (a *fakeAdmin) Exists(_ context.Context, name string) (bool, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	return a.s.containers[a.account][name], nil
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs at debug level into a buffer the test can search for
// leaked secrets.
func testLogger() (*slog.Logger, *syncBuffer) {
	var buf syncBuffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

// newTestNode returns a Node over a fake mounter with its state in a
// temporary directory.
func newTestNode(t *testing.T, m Mounter, log *slog.Logger) *Node {
	t.Helper()
	n, err := NewNode(NodeConfig{
		NodeID: "node-1", Mounter: m, StateDir: t.TempDir(),
		TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantCode fails the test unless err has code.
func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("code = %v (%v), want %v", got, err, code)
	}
}
