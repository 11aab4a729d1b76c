package csi

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/blobfs/blobfs/internal/config"
)

func TestVolumeIDRoundTrip(t *testing.T) {
	for _, v := range []VolumeID{
		{Account: "mydata", Container: "datasets"},
		{Account: "mydata", Container: "shared", Prefix: "ckpt/pvc-1234"},
		{Account: "mydata", Container: "pvc-1234", Owned: true},
		{Account: "mydata", Container: "c01", Prefix: "weird#name/100%/x y", Owned: true},
		{Container: "$root"},
	} {
		s := v.String()
		got, err := ParseVolumeID(s)
		if err != nil || got != v {
			t.Errorf("ParseVolumeID(%q) = %+v, %v; want %+v", s, got, err, v)
		}
		if strings.Count(s, "#") > 4 {
			t.Errorf("%q: a '#' in the prefix was not escaped", s)
		}
	}
	if s := (VolumeID{Account: "a1b", Container: "data"}).String(); s != "blobfs#a1b#data" {
		t.Errorf("String = %q, want blobfs#a1b#data", s)
	}
	if s := (VolumeID{Account: "a1b", Container: "data", Owned: true}).String(); s != "blobfs#a1b#data##owned" {
		t.Errorf("String = %q", s)
	}
}

func TestParseVolumeIDRejects(t *testing.T) {
	for _, id := range []string{
		"blobfs",
		"blobfs#acct",
		"blobfs#UPPER#data",
		"blobfs#acct#Bad_Container",
		"blobfs#acct#data#..",
		"blobfs#acct#data#a/../b",
		"blobfs#acct#data#/abs",
		"blobfs#acct#data#a//b",
		"blobfs#acct#data#%zz",
		"blobfs#acct#data#x%00y",
		"blobfs#acct#data##mine",
		"blobfs#acct#data#x#owned#extra",
		"other#acct#data",
	} {
		if v, err := ParseVolumeID(id); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseVolumeID(%q) = %+v, %v; want an ErrInvalid", id, v, err)
		}
	}
}

func TestMountFlags(t *testing.T) {
	m := baseMount()
	err := applyMountFlags(&m, []string{
		"-o allow_other", "-o ro,uid=1000,gid=1000", "umask=0027", "-oattr_timeout=240",
		"--file-cache-timeout-in-seconds=120", "--use-attr-cache=true", "--block-cache",
		"--block-cache-block-size=32", "--block-cache-pool-size", "4096", "--cancel-list-on-mount-seconds=10",
		"--log-level=LOG_WARNING", "--entry-timeout=30", "--negative-timeout=0.5", "--virtual-directory=true",
		"default_permissions", "nonempty", "--passthrough=off", "--ignore-interrupts=false", "--fetch-at-open-mb=16",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := baseMount()
	want.FS.AllowOther, want.FS.ReadOnly, want.FS.UID, want.FS.GID, want.FS.Umask = true, true, 1000, 1000, 0o027
	want.FS.AttrTTL, want.FS.EntryTTL, want.FS.NegativeTTL = 240*time.Second, 30*time.Second, 500*time.Millisecond
	want.FS.ListTTL = 120 * time.Second
	want.Cache.BlockSizeMB, want.Cache.MemSizeMB = 32, 4096
	want.Log.Level = "LOG_WARNING"
	want.FS.Passthrough = "off"
	want.FS.IgnoreInterrupts, want.Cache.FetchAtOpenMB = false, 16
	if m != want {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	m = baseMount()
	if err := applyMountFlags(&m, []string{"--read-only=false", "--use-attr-cache=false", "rw"}); err != nil || m.FS.ReadOnly || m.FS.ListTTL != 0 {
		t.Errorf("read-only=false/use-attr-cache=false: %+v, %v", m.FS, err)
	}
}

func TestMountFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		name  string // must be named
	}{
		{[]string{"--config-file=/etc/passwd"}, "--config-file"},
		{[]string{"--tmp-path=/"}, "--tmp-path"},
		{[]string{"--block-cache-path", "/x"}, "--block-cache-path"},
		{[]string{"--container-name=other"}, "--container-name"},
		{[]string{"--sas-token=sv=2020&sig=SECRETSIG"}, "--sas-token"},
		{[]string{"-o suid"}, "suid"},
		{[]string{"-o", "dev,exec"}, "dev"},
		{[]string{"password=SECRETSIG"}, "password"},
		{[]string{"-d"}, "-d"},
		{[]string{"-o"}, "-o"},
		{[]string{"--attr-timeout=soon"}, "--attr-timeout"},
		{[]string{"uid=-1"}, "uid"},
		{[]string{"umask=999"}, "umask"},
		{[]string{"allow_other=yes"}, "allow_other"},
		{[]string{"--attr-timeout"}, "--attr-timeout"},
		{[]string{"--passthrough=always"}, "--passthrough"},
		{[]string{"--fetch-at-open-mb=65"}, "--fetch-at-open-mb"},
		{[]string{"--ignore-interrupts=maybe"}, "--ignore-interrupts"},
	} {
		m := baseMount()
		err := applyMountFlags(&m, tc.flags)
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err = %v, want ErrInvalid", tc.flags, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%q: error %q does not name %s", tc.flags, err, tc.name)
		}
		if strings.Contains(err.Error(), "SECRETSIG") {
			t.Errorf("%q: error echoes the value: %q", tc.flags, err)
		}
	}
}

func TestBlobCSIAttributes(t *testing.T) {
	d := specDefaults{tenantID: "default-tenant"}
	vc := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, "-o allow_other", "--file-cache-timeout-in-seconds=60")
	// A blob-csi-driver static PV: free-form handle, attributes, secrets.
	spec, err := parseNodeVolume(d, "mydata_datasets", map[string]string{
		"containerName": "datasets", "storageaccount": "mydata", "protocol": "fuse2", "subDir": "imagenet/train",
		"resourceGroup": "rg", "blockSizeMB": "16", "cacheSizeMB": "200000", "prefetch": "32",
		"uid": "1000", "gid": "1000", "umask": "022",
	}, map[string]string{SecretAccountName: "mydata", SecretSASToken: "?sv=2022&sig=abc"}, vc, true)
	if err != nil {
		t.Fatal(err)
	}
	s, fs, c := spec.mount.Storage, spec.mount.FS, spec.mount.Cache
	if s.Account != "mydata" || s.Container != "datasets" || s.Subdirectory != "imagenet/train" || s.AuthMode != config.AuthSAS || s.SAS.Reveal() != "sv=2022&sig=abc" {
		t.Errorf("storage = %+v", s)
	}
	if !fs.ReadOnly || !fs.AllowOther || fs.UID != 1000 || fs.GID != 1000 || fs.Umask != 0o022 || fs.ListTTL != time.Minute {
		t.Errorf("fs = %+v", fs)
	}
	if c.BlockSizeMB != 16 || c.DiskSizeMB != 200000 || c.Prefetch != 32 {
		t.Errorf("cache = %+v", c)
	}
	// Managed identity by client id; endpoint from a public cloud suffix.
	spec, err = parseNodeVolume(d, "blobfs#mydata#data", map[string]string{
		"AzureStorageAuthType": "MSI", "AzureStorageIdentityClientID": "11111111-2222-3333-4444-555555555555",
		"storageEndpointSuffix": "core.chinacloudapi.cn",
	}, nil, rwx, true)
	if err != nil {
		t.Fatal(err)
	}
	if s := spec.mount.Storage; s.AuthMode != config.AuthMSI || s.ClientID == "" || s.Endpoint != "https://mydata.blob.core.chinacloudapi.cn" {
		t.Errorf("storage = %+v", s)
	}
}

// TestAttributeErrors: every refusal wraps ErrInvalid, names the key and
// never shows a secret.
func TestAttributeErrors(t *testing.T) {
	const secret = "U0VDUkVULUtFWS1WQUxVRQ=="
	sec := map[string]string{SecretAccountKey: secret}
	for _, tc := range []struct {
		name    string
		id      string
		attrs   map[string]string
		secrets map[string]string
		vc      *csi.VolumeCapability
		want    string
	}{
		{"nfs", testVolume, map[string]string{"protocol": "nfs"}, sec, rwx, "protocol"},
		{"unknown key", testVolume, map[string]string{"fancyOption": secret}, sec, rwx, "fancyOption"},
		{"blob-csi secretName", testVolume, map[string]string{"secretName": "s"}, sec, rwx, "nodeStageSecretRef"},
		{"dotdot subDir", "h", map[string]string{"containerName": "data", "storageAccount": "acct", "subDir": "a/../b"}, sec, rwx, "subDir"},
		{"bad container", "h", map[string]string{"containerName": "Data_1", "storageAccount": "acct"}, sec, rwx, "containerName"},
		{"no container", "just-a-handle", nil, sec, rwx, "containerName"},
		{"disagreeing container", testVolume, map[string]string{"containerName": "other"}, sec, rwx, "disagrees"},
		{"unknown secret key", testVolume, nil, map[string]string{"azurestoragepassword": secret}, rwx, "azurestoragepassword"},
		{"other account in secret", testVolume, nil, map[string]string{SecretAccountName: "otheracct", SecretAccountKey: secret}, rwx, SecretAccountName},
		{"no credentials", testVolume, nil, nil, rwx, "no credentials"},
		{"endpoint disabled", testVolume, map[string]string{"endpoint": "http://127.0.0.1:10000/devstoreaccount1"}, sec, rwx, "endpoint"},
		{"evil suffix", testVolume, map[string]string{"storageEndpointSuffix": "evil.example.com"}, sec, rwx, "storageEndpointSuffix"},
		{"wi without client", testVolume, map[string]string{"mountWithWorkloadIdentityToken": "true"}, nil, rwx, "clientID"},
		{"bad client id", testVolume, map[string]string{"clientID": "me"}, sec, rwx, "clientID"},
		{"bad uid", testVolume, map[string]string{"uid": "root"}, sec, rwx, "uid"},
		{"disallowed option", testVolume, nil, sec, mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "--tmp-path=/mnt"), "--tmp-path"},
		{"block access", testVolume, nil, sec, &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		}, "block"},
		{"multi node single writer", testVolume, nil, sec, mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER), "MULTI_NODE_SINGLE_WRITER"},
		{"no access mode", testVolume, nil, sec, &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}, "access mode"},
		{"malformed id", "blobfs#acct#Data", nil, sec, rwx, "container name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseNodeVolume(specDefaults{}, tc.id, tc.attrs, tc.secrets, tc.vc, true)
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the secret: %q", err)
			}
		})
	}
}

func TestPodIdentityErrors(t *testing.T) {
	const tok = "eyJhbGciOiJSUzI1NiJ9.secret-token"
	for name, attrs := range map[string]map[string]string{
		"no tokens":     {ctxPodNamespace: "ns", ctxServiceAccount: "sa"},
		"bad json":      {ctxTokens: `{"api://AzureADTokenExchange": "` + tok, ctxPodNamespace: "ns", ctxServiceAccount: "sa"},
		"wrong aud":     {ctxTokens: `{"api://other":{"token":"` + tok + `"}}`, ctxPodNamespace: "ns", ctxServiceAccount: "sa"},
		"no pod info":   {ctxTokens: `{"api://AzureADTokenExchange":{"token":"` + tok + `"}}`},
		"empty token":   {ctxTokens: `{"api://AzureADTokenExchange":{"token":""}}`, ctxPodNamespace: "ns", ctxServiceAccount: "sa"},
		"token is list": {ctxTokens: `["` + tok + `"]`, ctxPodNamespace: "ns", ctxServiceAccount: "sa"},
	} {
		_, err := parsePodIdentity(attrs)
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		} else if strings.Contains(err.Error(), "secret-token") {
			t.Errorf("%s: error shows the token: %v", name, err)
		}
	}
}
