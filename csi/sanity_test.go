package csi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"
)

// sanityBackendEnv switches the sanity run's backend: "fake" (the
// default: in-memory Mounter and ContainerAdmin, no root, no FUSE) or
// "azurite" (real `blobfs mount` processes through the supervisor against
// Azurite; wired at integration, see sanityBackend).
const sanityBackendEnv = "BLOBFS_CSI_SANITY_BACKEND"

// sanitySecret is the node-stage account key sanity sends; it must never
// show in a log line.
const sanitySecret = "c2FuaXR5LXNlY3JldC1rZXktbmV2ZXItbG9nZ2Vk"

const sanityAccount = "sanityacct"

// sanityIDs generates volume ids in blobfs's format.
type sanityIDs struct{ account string }

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func (g sanityIDs) GenerateUniqueValidVolumeID() string {
	return VolumeID{Account: g.account, Container: "sanity-" + randHex(6)}.String()
}
func (sanityIDs) GenerateInvalidVolumeID() string   { return "blobfs#Not_An_Account#x" }
func (sanityIDs) GenerateUniqueValidNodeID() string { return "node-" + randHex(4) }
func (sanityIDs) GenerateInvalidNodeID() string     { return "" }

// sanityEnv is what the driver under test mounts with and provisions
// through, and what sanity sends it.
type sanityEnv struct {
	mounter     Mounter
	admins      AdminFactory
	account     string
	key         string // the node-stage account key
	params      map[string]string
	allowCustom bool
}

// sanityBackend picks the backend by BLOBFS_CSI_SANITY_BACKEND.
func sanityBackend(t *testing.T, dir string) sanityEnv {
	switch b := os.Getenv(sanityBackendEnv); b {
	case "", "fake":
		return sanityEnv{mounter: newFakeMounter(), admins: newFakeStorage().admins, account: sanityAccount, key: sanitySecret}
	case "azurite":
		return azuriteSanityEnv(t, dir)
	default:
		t.Fatalf("%s=%q: want fake or azurite", sanityBackendEnv, b)
	}
	return sanityEnv{}
}

// TestSanity runs csi-test's sanity suite in-process against the whole
// driver (identity, controller, node) on a unix socket.
func TestSanity(t *testing.T) {
	dir := t.TempDir()
	env := sanityBackend(t, dir)
	log, logs := testLogger()
	node, err := NewNode(NodeConfig{NodeID: "sanity-node", Mounter: env.mounter, StateDir: filepath.Join(dir, "state"),
		AllowCustomEndpoints: env.allowCustom, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := NewController(ControllerConfig{Admins: env.admins, DefaultAccount: env.account, AllowCustomEndpoints: env.allowCustom, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity("", "v0.0.0-test", node.Probe, ctrl.Probe)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	lis, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, lis, log, Services{Identity: id, Controller: ctrl, Node: node}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	secrets := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secrets, []byte("NodeStageVolumeSecret:\n  azurestorageaccountkey: "+env.key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + sock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.SecretsFile = secrets
	cfg.IDGen = sanityIDs{account: env.account}
	cfg.TestVolumeParameters = env.params
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}))
	sanity.Test(t, cfg)

	if strings.Contains(logs.String(), env.key) {
		t.Errorf("the node-stage secret appears in the driver's log")
	}
}
