package csi

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// startDriver serves svc on a unix socket in a temporary directory and
// returns a client connection to it, as kubelet and the sidecars dial.
func startDriver(t *testing.T, log *slog.Logger, svc Services) *grpc.ClientConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "csi.sock")
	lis, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lis, log, svc) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn
}

// TestBadRequestsOverGRPC: what kubelet and the provisioner get back for
// requests they must not retry unchanged, through the real server (its
// interceptor included), and that no secret shows in any answer or log.
func TestBadRequestsOverGRPC(t *testing.T) {
	const secret = "S0VZLVRIQVQtTVVTVC1ORVZFUi1MRUFL"
	log, logs := testLogger()
	node := newTestNode(t, newFakeMounter(), log)
	ctrl, err := NewController(ControllerConfig{Admins: newFakeStorage().admins, DefaultAccount: "acct1", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := NewIdentity("", "test", node.Probe)
	conn := startDriver(t, log, Services{Identity: id, Controller: ctrl, Node: node})
	nc, cc := csi.NewNodeClient(conn), csi.NewControllerClient(conn)
	ctx := context.Background()
	dir := t.TempDir()
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "target")
	sec := map[string]string{SecretAccountKey: secret}
	stageReq := func(id string, vc *csi.VolumeCapability, attrs map[string]string) *csi.NodeStageVolumeRequest {
		return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc, VolumeContext: attrs, Secrets: sec}
	}
	cases := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"stage: no volume id", func() error { _, err := nc.NodeStageVolume(ctx, stageReq("", rwx, nil)); return err }, codes.InvalidArgument, "volume id"},
		{"stage: no staging path", func() error {
			r := stageReq(testVolume, rwx, nil)
			r.StagingTargetPath = ""
			_, err := nc.NodeStageVolume(ctx, r)
			return err
		}, codes.InvalidArgument, "staging"},
		{"stage: relative staging path", func() error {
			r := stageReq(testVolume, rwx, nil)
			r.StagingTargetPath = "rel/path"
			_, err := nc.NodeStageVolume(ctx, r)
			return err
		}, codes.InvalidArgument, "absolute"},
		{"stage: no capability", func() error { _, err := nc.NodeStageVolume(ctx, stageReq(testVolume, nil, nil)); return err }, codes.InvalidArgument, "capability"},
		{"stage: bad access mode", func() error {
			_, err := nc.NodeStageVolume(ctx, stageReq(testVolume, mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER), nil))
			return err
		}, codes.InvalidArgument, "access mode"},
		{"stage: malformed volume id", func() error {
			_, err := nc.NodeStageVolume(ctx, stageReq("blobfs#acct#Bad_Name", rwx, nil))
			return err
		}, codes.InvalidArgument, "container name"},
		{"stage: .. prefix", func() error {
			_, err := nc.NodeStageVolume(ctx, stageReq("blobfs#acct1#data#a%2F..%2Fb", rwx, nil))
			return err
		}, codes.InvalidArgument, "prefix"},
		{"stage: .. subDir attribute", func() error {
			_, err := nc.NodeStageVolume(ctx, stageReq("handle", rwx, map[string]string{"containerName": "data", "storageAccount": "acct1", "subDir": "../../etc"}))
			return err
		}, codes.InvalidArgument, "subDir"},
		{"stage: disallowed mount option", func() error {
			_, err := nc.NodeStageVolume(ctx, stageReq(testVolume, mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "--config-file=/etc/shadow"), nil))
			return err
		}, codes.InvalidArgument, "--config-file"},
		{"stage: nfs", func() error {
			_, err := nc.NodeStageVolume(ctx, stageReq(testVolume, rwx, map[string]string{"protocol": "nfs"}))
			return err
		}, codes.InvalidArgument, "protocol"},
		{"stage: secret pasted into an attribute", func() error {
			_, err := nc.NodeStageVolume(ctx, stageReq(testVolume, rwx, map[string]string{"accountKey": secret}))
			return err
		}, codes.InvalidArgument, "accountKey"},
		{"publish: no volume id", func() error {
			_, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{TargetPath: target, StagingTargetPath: staging, VolumeCapability: rwx})
			return err
		}, codes.InvalidArgument, "volume id"},
		{"publish: no target", func() error {
			_, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: testVolume, StagingTargetPath: staging, VolumeCapability: rwx})
			return err
		}, codes.InvalidArgument, "target"},
		{"publish: no capability", func() error {
			_, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: testVolume, TargetPath: target, StagingTargetPath: staging})
			return err
		}, codes.InvalidArgument, "capability"},
		{"publish: not staged", func() error {
			_, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: testVolume, TargetPath: target, StagingTargetPath: staging, VolumeCapability: rwx})
			return err
		}, codes.FailedPrecondition, "not staged"},
		{"publish: per-pod identity without token", func() error {
			_, err := nc.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: testVolume, TargetPath: target, StagingTargetPath: staging, VolumeCapability: rwx,
				VolumeContext: map[string]string{AttrWorkloadIdentityTokens: "true", AttrClientID: "11111111-2222-3333-4444-555555555555"}})
			return err
		}, codes.InvalidArgument, "tokenRequests"},
		{"unpublish: no target", func() error {
			_, err := nc.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: testVolume})
			return err
		}, codes.InvalidArgument, "target"},
		{"unstage: no volume id", func() error {
			_, err := nc.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{StagingTargetPath: staging})
			return err
		}, codes.InvalidArgument, "volume id"},
		{"stats: missing path", func() error {
			_, err := nc.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: testVolume, VolumePath: filepath.Join(dir, "nope")})
			return err
		}, codes.NotFound, "does not exist"},
		{"create: nfs", func() error {
			_, err := cc.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: []*csi.VolumeCapability{rwx},
				Parameters: map[string]string{"protocol": "nfs"}, Secrets: map[string]string{SecretAccountKey: secret}})
			return err
		}, codes.InvalidArgument, "protocol"},
		{"create: unknown secret key", func() error {
			_, err := cc.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: []*csi.VolumeCapability{rwx},
				Secrets: map[string]string{"password": secret}})
			return err
		}, codes.InvalidArgument, "password"},
		{"validate: malformed id", func() error {
			_, err := cc.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "blobfs#x", VolumeCapabilities: []*csi.VolumeCapability{rwx}})
			return err
		}, codes.InvalidArgument, "volume id"},
		{"delete: no id", func() error { _, err := cc.DeleteVolume(ctx, &csi.DeleteVolumeRequest{}); return err }, codes.InvalidArgument, "volume id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.code)
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("message %q does not mention %q", msg, tc.want)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("message shows the secret: %q", msg)
			}
		})
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the secret is in the driver's log")
	}
	if !strings.Contains(logs.String(), "NodeStageVolume") {
		t.Errorf("calls are not logged:\n%s", logs.String())
	}
}

func TestIdentity(t *testing.T) {
	fail := func(context.Context) error {
		return status.Error(codes.Unavailable, "mount supervisor is not reachable")
	}
	id, err := NewIdentity("", "v1.2.3", fail)
	if err != nil {
		t.Fatal(err)
	}
	conn := startDriver(t, slog.New(slog.DiscardHandler), Services{Identity: id})
	ic := csi.NewIdentityClient(conn)
	info, err := ic.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != DriverName || info.GetVendorVersion() != "v1.2.3" {
		t.Errorf("GetPluginInfo = %v, %v", info, err)
	}
	caps, err := ic.GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
	if err != nil || caps.GetCapabilities()[0].GetService().GetType() != csi.PluginCapability_Service_CONTROLLER_SERVICE {
		t.Errorf("GetPluginCapabilities = %v, %v", caps, err)
	}
	_, err = ic.Probe(context.Background(), &csi.ProbeRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "supervisor") {
		t.Errorf("Probe with a failing check = %v, want FailedPrecondition naming the cause", err)
	}
}
