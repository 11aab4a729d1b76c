package csi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/blobfs/blobfs/internal/config"
)

// The mount supervisor (`blobfs csi --mode mounter`) makes the FUSE mounts
// for the node plugin and is the reason they survive it.
//
// Why a separate process, and why this one. A FUSE mount lives exactly as
// long as the process serving it. Processes started by the node plugin
// live in its container's PID namespace and cgroup, and die when that
// container restarts (a crash, an OOM kill, a failed liveness probe, a
// `kubectl rollout restart` of one container): every pod on the node
// would lose its volume (ENOTCONN) at once. The options were (a) a
// supervisor on the host, like blob-csi-driver's blobfuse-proxy installed
// as a systemd unit, which means writing to the host from a privileged
// pod; (b) Mountpoint-S3-CSI-v2-style mount pods, one pod per mount, which
// needs API-server access and a scheduler dance in the node plugin; (c) a
// second, long-lived container in the node DaemonSet's pod that runs the
// mount processes and takes requests over a unix socket. blobfs uses (c):
// it needs no host changes and no API access, it is small (one socket,
// four operations), and the mounter container's code changes rarely, so
// the node plugin, which carries the CSI logic and its bugs, can crash,
// restart and be replaced (kubectl set image on its container) without
// touching a mount. What (c) does not survive is the whole pod being
// replaced (a DaemonSet rollout of the mounter image, a node reboot); use
// updateStrategy OnDelete and drain nodes to upgrade the mounter. Moving
// to (a) later is a deployment change only: the protocol and this code are
// the same, only the socket moves to a hostPath and the process to a unit.
//
// Each mount is its own `blobfs mount` process (daemonized with setsid, in
// the mounter container), so one mount's crash is one volume's problem.
// The supervisor keeps each mount's settings in a 0600 blobfs YAML file,
// secrets included, so it can repair a mount whose process died (the mount
// answers ENOTCONN) without the node-stage secrets, which only
// NodeStageVolume carries: at start-up for every mount it finds stale, and
// on request (RemountVolume) when a publish finds the staging mount dead.
//
// Protocol: one JSON request per connection, one JSON response, over a
// 0600 unix socket shared by the two containers (in the plugin's state
// directory). The peer must be root (SO_PEERCRED). Secrets travel in the
// request body only, never in argv or the environment of a child.

// Supervisor operations.
const (
	opPing    = "ping"
	opMount   = "mount"
	opRemount = "remount"
	opUnmount = "unmount"
)

// supRequest is one request to the supervisor.
type supRequest struct {
	Op       string `json:"op"`
	Target   string `json:"target,omitempty"`
	VolumeID string `json:"volumeID,omitempty"`
	// Config has its Secret fields empty; the secrets are in Secrets,
	// because config.Secret marshals as "[REDACTED]" by design.
	Config    *config.Mount `json:"config,omitempty"`
	Secrets   *wireSecrets  `json:"secrets,omitempty"`
	TimeoutMS int64         `json:"timeoutMS,omitempty"`
}

// wireSecrets carries a mount's secrets in plain strings.
type wireSecrets struct {
	AccountKey   string `json:"accountKey,omitempty"`
	SAS          string `json:"sas,omitempty"`
	ClientSecret string `json:"clientSecret,omitempty"`
}

// supResponse answers one request; Code is a gRPC code (0: OK).
type supResponse struct {
	Code    codes.Code `json:"code"`
	Message string     `json:"message,omitempty"`
}

// maxRequestBytes bounds a request (a mount's settings are a few KiB).
const maxRequestBytes = 1 << 20

// MountRunner starts one blobfs mount of the settings in configFile at
// target and returns once it serves, or with the mount's error.
type MountRunner func(ctx context.Context, configFile, target string) error

// ExecRunner runs `binary mount --config-file FILE TARGET`, which
// daemonizes and returns when the mount is ready (internal/daemon). The
// child gets a minimal environment: the supervisor's own AZURE_*
// variables (its pod's workload identity, say) must never leak into a
// volume's mount, whose every setting is in the file.
func ExecRunner(binary string) MountRunner {
	return func(ctx context.Context, configFile, target string) error {
		cmd := exec.CommandContext(ctx, binary, "mount", "--config-file", configFile, target)
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		var out tailBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(out.String())
			if msg == "" {
				msg = err.Error()
			}
			return fmt.Errorf("blobfs mount: %s", msg)
		}
		return nil
	}
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// SupervisorConfig configures the mount supervisor.
type SupervisorConfig struct {
	// StateDir holds <StateDir>/mounter/mounts/<hash(target)>/ with each
	// mount's config.yaml (0600, secrets included), record and log.
	StateDir string
	// CacheDir is the node block cache every mount shares; it overrides
	// whatever a request says, because it is a path in this container.
	CacheDir string
	// MountRoots are the directories targets must be under (kubelet's
	// directory and the state directory), so the socket cannot be used to
	// mount over arbitrary paths.
	MountRoots []string
	// Runner makes one mount; nil means ExecRunner of this executable.
	Runner MountRunner
	// FUSEDevice is opened by Probe; empty means /dev/fuse.
	FUSEDevice string
	Logger     *slog.Logger
}

// Supervisor makes, repairs and removes blobfs mounts. It implements
// VolumeMounter in-process; Serve offers the same over a unix socket, and
// SupervisorClient is the node plugin's side of that socket.
type Supervisor struct {
	cfg   SupervisorConfig
	dir   string
	log   *slog.Logger
	locks *keyLocks // by target
	// runMu is held shared while a Runner runs and exclusively while
	// orphans are reaped, so the reaper never collects a runner's own
	// child before its Wait does.
	runMu sync.RWMutex
}

var _ VolumeMounter = (*Supervisor)(nil)

// mountRecord is what the supervisor remembers of one mount.
type mountRecord struct {
	Target   string `json:"target"`
	VolumeID string `json:"volumeID"`
	// Fingerprint is a hash of the settings without secrets: a second
	// mount request with the same fingerprint is a retry.
	Fingerprint string `json:"fingerprint"`
}

// NewSupervisor returns a supervisor; it creates its state directory.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("csi: supervisor state directory %q must be absolute: %w", cfg.StateDir, ErrInvalid)
	}
	if len(cfg.MountRoots) == 0 {
		return nil, fmt.Errorf("csi: supervisor needs at least one mount root: %w", ErrInvalid)
	}
	for i, r := range cfg.MountRoots {
		if !filepath.IsAbs(r) {
			return nil, fmt.Errorf("csi: mount root %q must be absolute: %w", r, ErrInvalid)
		}
		cfg.MountRoots[i] = filepath.Clean(r)
	}
	if cfg.Runner == nil {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("csi: own executable: %w", err)
		}
		cfg.Runner = ExecRunner(self)
	}
	if cfg.FUSEDevice == "" {
		cfg.FUSEDevice = "/dev/fuse"
	}
	dir := filepath.Join(cfg.StateDir, "mounter", "mounts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("csi: supervisor state: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Supervisor{cfg: cfg, dir: dir, log: log.With("service", "mounter"), locks: newKeyLocks()}, nil
}

func (s *Supervisor) mountDir(target string) string { return filepath.Join(s.dir, shortHash(target)) }

func (s *Supervisor) checkTarget(target string) error {
	if !filepath.IsAbs(target) || filepath.Clean(target) != target {
		return status.Errorf(codes.InvalidArgument, "mount target %q must be a clean absolute path", target)
	}
	for _, r := range s.cfg.MountRoots {
		if strings.HasPrefix(target, r+"/") {
			return nil
		}
	}
	return status.Errorf(codes.InvalidArgument, "mount target %s is outside the supervisor's mount roots %v", target, s.cfg.MountRoots)
}

// fingerprint hashes the settings that make a mount what it is, without
// secrets (a rotated key is not a different mount).
func fingerprint(m config.Mount) string {
	m.Storage.AccountKey, m.Storage.SAS, m.Storage.ClientSecret = "", "", ""
	b, _ := json.Marshal(m)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Probe implements VolumeMounter: the FUSE device opens.
func (s *Supervisor) Probe(context.Context) error {
	f, err := os.OpenFile(s.cfg.FUSEDevice, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cannot open the FUSE device: %w", err)
	}
	return f.Close()
}

// Mount implements VolumeMounter.
func (s *Supervisor) Mount(ctx context.Context, target string, spec MountSpec) error {
	if err := s.checkTarget(target); err != nil {
		return err
	}
	release, ok := s.locks.tryLock(target)
	if !ok {
		return aborted("mount target", target)
	}
	defer release()

	m := spec.Config
	if s.cfg.CacheDir != "" {
		m.Cache.Dir = s.cfg.CacheDir
	}
	dir := s.mountDir(target)
	m.Log.File = filepath.Join(dir, "blobfs.log")
	m.Foreground = false
	if err := m.Validate(); err != nil {
		return status.Errorf(codes.InvalidArgument, "mount settings: %v", err)
	}
	rec := mountRecord{Target: target, VolumeID: spec.VolumeID, Fingerprint: fingerprint(m)}

	st, err := pathState(target)
	if err != nil {
		return err
	}
	switch st {
	case Mounted:
		var old mountRecord
		ok, err := readJSON(filepath.Join(dir, "mount.json"), &old)
		if err != nil {
			return err
		}
		if !ok || old.Fingerprint != rec.Fingerprint {
			return status.Errorf(codes.FailedPrecondition, "%s is already mounted with other settings (or not by blobfs)", target)
		}
		// A retry: keep the mount, refresh the stored secrets so a later
		// repair uses the current ones.
		return s.writeMount(dir, m, rec)
	case Stale:
		s.log.WarnContext(ctx, "replacing stale mount", "target", target, "volume_id", spec.VolumeID)
		if err := unmountPath(target); err != nil {
			return err
		}
	case NotExist:
		if err := os.MkdirAll(target, 0o750); err != nil {
			return fmt.Errorf("creating mount target: %w", err)
		}
	}
	if err := s.writeMount(dir, m, rec); err != nil {
		return err
	}
	if err := s.run(ctx, dir, target); err != nil {
		_ = os.RemoveAll(dir) // no settings, no secrets left behind
		return err
	}
	s.log.InfoContext(ctx, "mounted", "target", target, "volume_id", spec.VolumeID,
		"account", m.Storage.Account, "container", m.Storage.Container, "auth_mode", string(m.Storage.AuthMode))
	return nil
}

// run starts the mount and checks that it serves.
func (s *Supervisor) run(ctx context.Context, dir, target string) error {
	s.runMu.RLock()
	err := s.cfg.Runner(ctx, filepath.Join(dir, "config.yaml"), target)
	s.runMu.RUnlock()
	if err != nil {
		return status.Errorf(codes.Internal, "mounting %s: %v", target, err)
	}
	st, err := pathState(target)
	if err != nil {
		return err
	}
	if st != Mounted {
		return status.Errorf(codes.Internal, "mounting %s: the mount command succeeded but %s is %s", target, target, st)
	}
	return nil
}

// writeMount stores a mount's settings (0600) and record.
func (s *Supervisor) writeMount(dir string, m config.Mount, rec mountRecord) error {
	y, err := marshalMountConfig(m)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "config.yaml"), y); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "mount.json"), rec)
}

// marshalMountConfig writes m as the blobfs YAML `blobfs mount
// --config-file` reads, secrets included. config.Secret redacts itself
// on marshal (by design), so the secrets are put into the YAML tree
// explicitly, and only here.
func marshalMountConfig(m config.Mount) ([]byte, error) {
	b, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("mount config: %w", err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(b, &tree); err != nil {
		return nil, fmt.Errorf("mount config: %w", err)
	}
	st, ok := tree["storage"].(map[string]any)
	if !ok {
		return nil, errors.New("mount config: no storage section")
	}
	for key, sec := range map[string]config.Secret{
		"account-key":   m.Storage.AccountKey,
		"sas":           m.Storage.SAS,
		"client-secret": m.Storage.ClientSecret,
	} {
		if sec == "" {
			delete(st, key)
		} else {
			st[key] = sec.Reveal()
		}
	}
	out, err := yaml.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("mount config: %w", err)
	}
	return out, nil
}

// Remount implements VolumeMounter: repair a stale mount from its stored
// settings.
func (s *Supervisor) Remount(ctx context.Context, target string) error {
	if err := s.checkTarget(target); err != nil {
		return err
	}
	release, ok := s.locks.tryLock(target)
	if !ok {
		return aborted("mount target", target)
	}
	defer release()
	return s.remount(ctx, target)
}

func (s *Supervisor) remount(ctx context.Context, target string) error {
	dir := s.mountDir(target)
	var rec mountRecord
	ok, err := readJSON(filepath.Join(dir, "mount.json"), &rec)
	if err != nil {
		return err
	}
	if !ok {
		return status.Errorf(codes.FailedPrecondition, "no settings recorded for %s; stage the volume again", target)
	}
	st, err := pathState(target)
	if err != nil {
		return err
	}
	switch st {
	case Mounted:
		return nil
	case Stale:
		if err := unmountPath(target); err != nil {
			return err
		}
	case NotExist:
		if err := os.MkdirAll(target, 0o750); err != nil {
			return fmt.Errorf("creating mount target: %w", err)
		}
	}
	if err := s.run(ctx, dir, target); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "remounted", "target", target, "volume_id", rec.VolumeID)
	return nil
}

// Unmount implements VolumeMounter: unmount (detaching if busy or stale)
// and delete the stored settings and secrets.
func (s *Supervisor) Unmount(ctx context.Context, target string) error {
	if err := s.checkTarget(target); err != nil {
		return err
	}
	release, ok := s.locks.tryLock(target)
	if !ok {
		return aborted("mount target", target)
	}
	defer release()
	if err := unmountPath(target); err != nil {
		return err
	}
	if err := os.RemoveAll(s.mountDir(target)); err != nil {
		return fmt.Errorf("removing mount settings: %w", err)
	}
	s.log.InfoContext(ctx, "unmounted", "target", target)
	return nil
}

// Recover runs at start-up: mounts whose process died with the previous
// mounter container are remounted from their stored settings, so new pods
// can use them at once; records of mounts that are gone (a reboot, an
// unmount while the supervisor was down) are deleted with their secrets.
func (s *Supervisor) Recover(ctx context.Context) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		s.log.ErrorContext(ctx, "recovery: reading state", "error", err)
		return
	}
	var live, repaired, failed, dropped int
	for _, e := range ents {
		dir := filepath.Join(s.dir, e.Name())
		var rec mountRecord
		if ok, err := readJSON(filepath.Join(dir, "mount.json"), &rec); err != nil || !ok || rec.Target == "" {
			_ = os.RemoveAll(dir)
			dropped++
			continue
		}
		st, err := pathState(rec.Target)
		switch {
		case err != nil:
			s.log.WarnContext(ctx, "recovery: inspecting mount", "target", rec.Target, "error", err)
		case st == Mounted:
			live++
		case st == Stale:
			if err := s.remount(ctx, rec.Target); err != nil {
				failed++
				s.log.ErrorContext(ctx, "recovery: remounting stale mount", "target", rec.Target, "volume_id", rec.VolumeID, "error", err)
			} else {
				repaired++
			}
		default:
			_ = os.RemoveAll(dir)
			dropped++
		}
	}
	s.log.InfoContext(ctx, "recovered mounts", "live", live, "repaired", repaired, "failed", failed, "dropped", dropped)
}

// Serve answers requests on lis until ctx is done. Running as PID 1 of
// its container, it also reaps the mount daemons re-parented to it when
// they exit, since nothing else would.
func (s *Supervisor) Serve(ctx context.Context, lis net.Listener) error {
	go func() {
		<-ctx.Done()
		lis.Close()
	}()
	if os.Getpid() == 1 {
		go s.reapOrphans(ctx)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("mounter: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, conn)
		}()
	}
}

// reapOrphans waits for exited children that are not a Runner's: the
// daemonized `blobfs mount` processes, whose parent exited once they were
// ready, become this process's children when it is PID 1.
func (s *Supervisor) reapOrphans(ctx context.Context) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		}
		s.runMu.Lock()
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		s.runMu.Unlock()
	}
}

// handle answers one connection's one request.
func (s *Supervisor) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	resp := func(err error) {
		r := supResponse{}
		if err != nil {
			st := status.Convert(toStatus(err))
			r.Code, r.Message = st.Code(), st.Message()
		}
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_ = json.NewEncoder(conn).Encode(r)
	}
	if err := checkPeer(conn); err != nil {
		s.log.WarnContext(ctx, "refused a connection", "error", err)
		resp(status.Error(codes.PermissionDenied, err.Error()))
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var req supRequest
	if err := json.NewDecoder(io.LimitReader(conn, maxRequestBytes)).Decode(&req); err != nil {
		resp(status.Error(codes.InvalidArgument, "malformed request"))
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 || timeout > 10*time.Minute {
		timeout = 2 * time.Minute
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch req.Op {
	case opPing:
		resp(s.Probe(rctx))
	case opMount:
		if req.Config == nil {
			resp(status.Error(codes.InvalidArgument, "mount without settings"))
			return
		}
		m := *req.Config
		if req.Secrets != nil {
			m.Storage.AccountKey = config.Secret(req.Secrets.AccountKey)
			m.Storage.SAS = config.Secret(req.Secrets.SAS)
			m.Storage.ClientSecret = config.Secret(req.Secrets.ClientSecret)
		}
		resp(s.Mount(rctx, req.Target, MountSpec{VolumeID: req.VolumeID, Config: m}))
	case opRemount:
		resp(s.Remount(rctx, req.Target))
	case opUnmount:
		resp(s.Unmount(rctx, req.Target))
	default:
		resp(status.Errorf(codes.InvalidArgument, "unknown operation %q", req.Op))
	}
}

// checkPeer admits only root (or this process's own user) on the other
// end of the socket.
func checkPeer(conn net.Conn) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil // in-memory pipes in tests
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("peer credentials: %w", serr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("peer uid %d is not root", cred.Uid)
	}
	return nil
}

// SupervisorClient is the node plugin's side of the supervisor socket. It
// implements VolumeMounter.
type SupervisorClient struct {
	socket string
}

var _ VolumeMounter = (*SupervisorClient)(nil)

// NewSupervisorClient returns a client for the supervisor listening on
// endpoint (unix:///ABSOLUTE/PATH). It does not connect until used.
func NewSupervisorClient(endpoint string) (*SupervisorClient, error) {
	p, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	return &SupervisorClient{socket: p}, nil
}

// Mount implements VolumeMounter.
func (c *SupervisorClient) Mount(ctx context.Context, target string, spec MountSpec) error {
	m := spec.Config
	sec := &wireSecrets{
		AccountKey:   m.Storage.AccountKey.Reveal(),
		SAS:          m.Storage.SAS.Reveal(),
		ClientSecret: m.Storage.ClientSecret.Reveal(),
	}
	m.Storage.AccountKey, m.Storage.SAS, m.Storage.ClientSecret = "", "", ""
	return c.call(ctx, supRequest{Op: opMount, Target: target, VolumeID: spec.VolumeID, Config: &m, Secrets: sec})
}

// Remount implements VolumeMounter.
func (c *SupervisorClient) Remount(ctx context.Context, target string) error {
	return c.call(ctx, supRequest{Op: opRemount, Target: target})
}

// Unmount implements VolumeMounter.
func (c *SupervisorClient) Unmount(ctx context.Context, target string) error {
	return c.call(ctx, supRequest{Op: opUnmount, Target: target})
}

// Probe implements VolumeMounter: the supervisor answers and can open the
// FUSE device.
func (c *SupervisorClient) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.call(ctx, supRequest{Op: opPing})
}

func (c *SupervisorClient) call(ctx context.Context, req supRequest) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return status.Errorf(codes.Unavailable, "mount supervisor is not reachable at %s: %v", c.socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		req.TimeoutMS = time.Until(dl).Milliseconds()
	}
	// Close the connection when ctx ends, so a cancelled call does not
	// wait for the supervisor (which finishes the mount regardless; a
	// retry finds it).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var body bytes.Buffer
	if err := json.NewEncoder(&body).Encode(req); err != nil {
		return fmt.Errorf("mount supervisor request: %w", err)
	}
	if _, err := conn.Write(body.Bytes()); err != nil {
		return status.Errorf(codes.Unavailable, "mount supervisor: sending: %v", err)
	}
	var resp supResponse
	if err := json.NewDecoder(io.LimitReader(conn, maxRequestBytes)).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("mount supervisor: %w", ctx.Err())
		}
		return status.Errorf(codes.Unavailable, "mount supervisor: no answer: %v", err)
	}
	if resp.Code != codes.OK {
		return status.Error(resp.Code, resp.Message)
	}
	return nil
}
