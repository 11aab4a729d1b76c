package csi

import (
	"context"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func newTestController(t *testing.T) (*Controller, *fakeStorage) {
	t.Helper()
	s := newFakeStorage()
	c, err := NewController(ControllerConfig{Admins: s.admins, DefaultAccount: "defaultacct"})
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func create(c *Controller, name string, params, secrets map[string]string, caps ...*csi.VolumeCapability) (*csi.Volume, error) {
	if len(caps) == 0 {
		caps = []*csi.VolumeCapability{rwx}
	}
	resp, err := c.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: name, Parameters: params, Secrets: secrets, VolumeCapabilities: caps})
	return resp.GetVolume(), err
}

func deleteVol(c *Controller, id string) error {
	_, err := c.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id})
	return err
}

// TestControllerOwnedContainer: a container per PVC, created once, the id
// says it is owned, DeleteVolume deletes it, twice is fine.
func TestControllerOwnedContainer(t *testing.T) {
	c, s := newTestController(t)
	name := "pvc-0f6a3b2e-9c1d-4e5f-8a7b-6c5d4e3f2a1b"
	params := map[string]string{"storageAccount": "mydata", "blockSizeMB": "16", "csi.storage.k8s.io/pvc/name": "data"}
	v1, err := create(c, name, params, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := create(c, name, params, nil) // a retry
	if err != nil || v2.GetVolumeId() != v1.GetVolumeId() {
		t.Fatalf("retry = %v, %v; want the same id %s", v2, err, v1.GetVolumeId())
	}
	if v1.GetVolumeId() != "blobfs#mydata#"+name+"##owned" {
		t.Errorf("id = %q", v1.GetVolumeId())
	}
	if !s.has("mydata", name) {
		t.Fatalf("container not created")
	}
	if ctx := v1.GetVolumeContext(); ctx["blockSizeMB"] != "16" || ctx["storageAccount"] != "" || ctx["csi.storage.k8s.io/pvc/name"] != "" {
		t.Errorf("volume context = %v: want node settings only", ctx)
	}
	for i := 0; i < 2; i++ {
		if err := deleteVol(c, v1.GetVolumeId()); err != nil {
			t.Fatal(err)
		}
	}
	if s.has("mydata", name) {
		t.Errorf("owned container not deleted")
	}
}

// TestControllerNeverDeletesForeignData: shared containers, prefix
// volumes, static handles and malformed ids are never deleted.
func TestControllerNeverDeletesForeignData(t *testing.T) {
	c, s := newTestController(t)
	s.add("mydata", "shared")
	v, err := create(c, "pvc-1", map[string]string{"storageAccount": "mydata", "containerName": "shared", "prefix": "ckpt"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.GetVolumeId() != "blobfs#mydata#shared#ckpt/pvc-1" {
		t.Errorf("prefix volume id = %q", v.GetVolumeId())
	}
	v2, err := create(c, "pvc-2", map[string]string{"containerName": "newshared"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.has("defaultacct", "newshared") || strings.Contains(v2.GetVolumeId(), "owned") {
		t.Errorf("shared container: id %q, created %v", v2.GetVolumeId(), s.has("defaultacct", "newshared"))
	}
	s.add("mydata", "datasets")
	for _, id := range []string{v.GetVolumeId(), v2.GetVolumeId(), "blobfs#mydata#datasets", "mydata_datasets", "blobfs#BAD"} {
		if err := deleteVol(c, id); err != nil {
			t.Errorf("DeleteVolume(%q): %v", id, err)
		}
	}
	for _, name := range []string{"shared", "datasets"} {
		if !s.has("mydata", name) {
			t.Errorf("container %s deleted", name)
		}
	}
	if !s.has("defaultacct", "newshared") {
		t.Errorf("shared container deleted")
	}
}

func TestControllerCreateErrors(t *testing.T) {
	c, _ := newTestController(t)
	for _, tc := range []struct {
		name   string
		vol    string
		params map[string]string
		caps   []*csi.VolumeCapability
		code   codes.Code
		want   string
	}{
		{"no name", "", nil, nil, codes.InvalidArgument, "name"},
		{"nfs", "v", map[string]string{"protocol": "nfs"}, nil, codes.InvalidArgument, "protocol"},
		{"sku", "v", map[string]string{"skuName": "Premium_LRS"}, nil, codes.InvalidArgument, "skuName"},
		{"dotdot", "v", map[string]string{"containerName": "shared", "prefix": "../x"}, nil, codes.InvalidArgument, "prefix"},
		{"prefix without container", "v", map[string]string{"prefix": "x"}, nil, codes.InvalidArgument, "containerName"},
		{"bad option", "v", nil, []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "-o suid")}, codes.InvalidArgument, "suid"},
		{"block", "v", nil, []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		}}, codes.InvalidArgument, "block"},
		{"long id", "v", map[string]string{"containerName": "shared", "prefix": strings.Repeat("p", 110)}, nil, codes.InvalidArgument, "128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caps := tc.caps
			if caps == nil {
				caps = []*csi.VolumeCapability{rwx}
			}
			_, err := create(c, tc.vol, tc.params, nil, caps...)
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	static, err := NewController(ControllerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = create(static, "v", nil, nil)
	wantCode(t, err, codes.Unimplemented)
}

func TestContainerNameFor(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{
		"pvc-0f6a3b2e-9c1d-4e5f-8a7b-6c5d4e3f2a1b", "PVC_Upper", "pvc_upper", "a", "--", strings.Repeat("x", 128),
		strings.Repeat("x", 127) + "y", "sanity-node-full-1-ABCDEF",
	} {
		got := containerNameFor("", name)
		if err := validateContainer(got); err != nil {
			t.Errorf("containerNameFor(%q) = %q: %v", name, got, err)
		}
		if got != containerNameFor("", name) {
			t.Errorf("not deterministic for %q", name)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("%q and %q share container %q", prev, name, got)
		}
		seen[got] = name
	}
	if got := containerNameFor("team-a", "pvc-1"); got != "team-a-pvc-1" {
		t.Errorf("with prefix: %q", got)
	}
}

func TestValidateVolumeCapabilities(t *testing.T) {
	c, s := newTestController(t)
	s.add("mydata", "datasets")
	validate := func(id string, caps ...*csi.VolumeCapability) (*csi.ValidateVolumeCapabilitiesResponse, error) {
		return c.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: caps})
	}
	for _, mode := range []csi.VolumeCapability_AccessMode_Mode{
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
	} {
		r, err := validate("blobfs#mydata#datasets", mountCap(mode))
		if err != nil || r.GetConfirmed() == nil {
			t.Errorf("%v: %v, %v; want confirmed", mode, r, err)
		}
	}
	r, err := validate("blobfs#mydata#datasets", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER))
	if err != nil || r.GetConfirmed() != nil || r.GetMessage() == "" {
		t.Errorf("MULTI_NODE_SINGLE_WRITER: %v, %v; want unconfirmed with a message", r, err)
	}
	_, err = validate("blobfs#mydata#missing", rwx)
	wantCode(t, err, codes.NotFound)
	_, err = validate("blobfs#mydata#BAD", rwx)
	wantCode(t, err, codes.InvalidArgument)
	_, err = validate("blobfs#mydata#datasets")
	wantCode(t, err, codes.InvalidArgument)
}
