package csi

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/blobfs/blobfs/internal/config"
)

// Volume attributes (PV volumeAttributes, StorageClass parameters, which
// CreateVolume passes on as the volume context). Keys match
// case-insensitively, as blob-csi-driver's do; these are the spellings the
// documentation uses.
const (
	// Where the data is. For a blobfs volume id these must agree with it.
	AttrStorageAccount = "storageAccount"
	AttrContainerName  = "containerName"
	// AttrSubDir (blob-csi-driver's name) and AttrPrefix confine the volume
	// to a prefix of the container. In a StorageClass they name the parent
	// prefix under which each PVC gets its own "<prefix>/<pv name>".
	AttrSubDir = "subDir"
	AttrPrefix = "prefix"
	// AttrContainerNamePrefix (StorageClass only) starts the name of each
	// container CreateVolume makes.
	AttrContainerNamePrefix = "containerNamePrefix"
	// AttrProtocol must be fuse or fuse2 (or absent); blob-csi-driver's nfs
	// is refused.
	AttrProtocol = "protocol"

	// Credentials and identities.
	AttrClientID               = "clientID"
	AttrTenantID               = "tenantID"
	AttrAuthType               = "AzureStorageAuthType"
	AttrIdentityClientID       = "AzureStorageIdentityClientID"
	AttrIdentityResourceID     = "AzureStorageIdentityResourceID"
	AttrSPNClientID            = "AzureStorageSPNClientID"
	AttrSPNTenantID            = "AzureStorageSPNTenantID"
	AttrWorkloadIdentityTokens = "mountWithWorkloadIdentityToken"

	// Endpoints. AttrEndpointSuffix must be a public Azure cloud's suffix;
	// AttrEndpoint (a full blob service URL, e.g. Azurite or a private
	// endpoint) needs the driver's --allow-custom-endpoints, because a
	// mount sends its credential (a bearer token for workload identity) to
	// whatever endpoint it is given.
	AttrEndpointSuffix = "storageEndpointSuffix"
	AttrEndpoint       = "endpoint"

	// blobfs's own tuning.
	AttrBlockSizeMB = "blockSizeMB"
	AttrCacheSizeMB = "cacheSizeMB"
	AttrPrefetch    = "prefetch"
	AttrUmask       = "umask"
	AttrUID         = "uid"
	AttrGID         = "gid"
)

// Node-stage (and provisioner) secret keys, as blob-csi-driver names them.
const (
	SecretAccountName     = "azurestorageaccountname"
	SecretAccountKey      = "azurestorageaccountkey"
	SecretSASToken        = "azurestorageaccountsastoken"
	SecretSPNClientSecret = "azurestoragespnclientsecret"
)

// Keys kubelet adds to the volume context.
const (
	k8sPrefix          = "csi.storage.k8s.io/"
	ctxPodNamespace    = k8sPrefix + "pod.namespace"
	ctxServiceAccount  = k8sPrefix + "serviceAccount.name"
	ctxTokens          = k8sPrefix + "serviceAccount.tokens"
	ctxEphemeral       = k8sPrefix + "ephemeral"
	tokenAudienceAzure = "api://AzureADTokenExchange"
)

// ignoredAttrs are blob-csi-driver attributes that only inform (static PVs
// written for it carry them) and change nothing for blobfs.
var ignoredAttrs = []string{"resourcegroup", "subscriptionid"}

// attrHints explain common blob-csi-driver keys blobfs refuses.
var attrHints = map[string]string{
	"secretname":      "reference the secret with nodeStageSecretRef (csi.storage.k8s.io/node-stage-secret-name) instead",
	"secretnamespace": "reference the secret with nodeStageSecretRef (csi.storage.k8s.io/node-stage-secret-namespace) instead",
	"skuname":         "blobfs does not create storage accounts; set storageAccount to an existing one",
	"location":        "blobfs does not create storage accounts; set storageAccount to an existing one",
	"ishnsenabled":    "blobfs does not create storage accounts",
}

// publicSuffixes are the blob endpoint suffixes of Azure's public clouds.
var publicSuffixes = []string{"core.windows.net", "core.chinacloudapi.cn", "core.usgovcloudapi.net"}

var (
	guidRE   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	tenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$`)
)

// Credentials authorize the controller's container operations. Empty
// fields mean "use the controller's own identity".
type Credentials struct {
	AccountKey config.Secret
	SAS        config.Secret
}

// volumeSpec is everything one node request says about a volume, parsed
// and validated.
type volumeSpec struct {
	// id is the CSI volume id, verbatim.
	id  string
	loc VolumeID
	// mount is the complete mount configuration, secrets included.
	mount config.Mount
	// perPod: mount at publish with the pod's own workload identity token.
	perPod bool
	// mountGroup is the fsGroup kubelet delegated (VolumeMountGroup), and
	// gidFromGroup says it decided the mount's gid.
	mountGroup   string
	gidFromGroup bool
	// accessMode is the requested access mode.
	accessMode csi.VolumeCapability_AccessMode_Mode
}

// specDefaults are node-wide settings a volume starts from.
type specDefaults struct {
	tenantID             string
	authorityHost        string
	allowCustomEndpoints bool
}

// baseMount is where every CSI volume's configuration starts: blobfs's
// defaults, with allow_other on and no umask, as BlobFuse2 under
// blob-csi-driver behaves (files 0777), because pods seldom run as the
// mount's owner (root) and Ray images run as uid 1000. Volumes tighten it
// with the umask, uid and gid attributes or the pod's fsGroup.
func baseMount() config.Mount {
	m := config.Default()
	m.FS.AllowOther = true
	m.FS.Umask = 0
	return m
}

// attrParser accumulates a volume's settings from attributes, secrets and
// the capability.
type attrParser struct {
	d     specDefaults
	spec  volumeSpec
	fixed VolumeID // fields the volume id fixes; empty ones may be filled

	authType       string
	clientID       string
	identityID     string
	identityRes    string
	explicitGID    bool
	endpointSuffix string
	provisioning   bool
	requireAuth    bool // parsing StorageClass parameters, not a node request
	parentPrefix   string
	namePrefix     string
}

// parseNodeVolume parses a node request's volume: id, context, secrets and
// capability. requireAuth says the caller will mount with these settings
// (NodeStageVolume), so credentials must be there; NodePublishVolume of a
// staged volume mounts nothing and has no node-stage secrets.
func parseNodeVolume(d specDefaults, volumeID string, attrs, secrets map[string]string, vc *csi.VolumeCapability, requireAuth bool) (*volumeSpec, error) {
	p := &attrParser{d: d, requireAuth: requireAuth}
	p.spec.id = volumeID
	p.spec.mount = baseMount()
	if IsBlobfsVolumeID(volumeID) {
		loc, err := ParseVolumeID(volumeID)
		if err != nil {
			return nil, err
		}
		p.fixed, p.spec.loc = loc, loc
	} else if err := validateForeignHandle(volumeID); err != nil {
		return nil, err
	}
	if err := p.attrs(attrs); err != nil {
		return nil, err
	}
	if err := p.secrets(secrets); err != nil {
		return nil, err
	}
	if err := p.capability(vc); err != nil {
		return nil, err
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return &p.spec, nil
}

// validateForeignHandle accepts a hand-written volumeHandle that is not a
// blobfs id (blob-csi-driver style "account_container"): it only has to be
// printable, because it is used as a key and in messages.
func validateForeignHandle(id string) error {
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("volume id contains a control character: %w", ErrInvalid)
		}
	}
	return nil
}

func (p *attrParser) attrs(attrs map[string]string) error {
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first bad key reported is deterministic
	m := &p.spec.mount
	for _, k := range keys {
		v := attrs[k]
		bad := func(want string) error {
			return fmt.Errorf("volume attribute %s=%q: %s: %w", k, v, want, ErrInvalid)
		}
		if strings.HasPrefix(k, k8sPrefix) {
			continue // pod info and tokens, read where they are needed
		}
		lk := strings.ToLower(k)
		if slices.Contains(ignoredAttrs, lk) {
			continue
		}
		switch lk {
		case strings.ToLower(AttrStorageAccount):
			if err := validateAccount(v); err != nil {
				return fmt.Errorf("volume attribute %s: %w", k, err)
			}
			if err := p.agree(k, &p.spec.loc.Account, p.fixed.Account, v); err != nil {
				return err
			}
		case strings.ToLower(AttrContainerName):
			if err := validateContainer(v); err != nil {
				return fmt.Errorf("volume attribute %s: %w", k, err)
			}
			if err := p.agree(k, &p.spec.loc.Container, p.fixed.Container, v); err != nil {
				return err
			}
		case strings.ToLower(AttrSubDir), strings.ToLower(AttrPrefix):
			pre, err := cleanPrefix(v)
			if err != nil {
				return fmt.Errorf("volume attribute %s: %w", k, err)
			}
			if p.provisioning {
				p.parentPrefix = pre
			} else if err := p.agree(k, &p.spec.loc.Prefix, p.fixed.Prefix, pre); err != nil {
				return err
			}
		case strings.ToLower(AttrContainerNamePrefix):
			if !p.provisioning {
				return bad("only meaningful in a StorageClass")
			}
			if v == "" || len(v) > 20 || validateContainer(v+"-x") != nil {
				return bad("want up to 20 lower-case letters, digits and single hyphens")
			}
			p.namePrefix = v
		case strings.ToLower(AttrProtocol):
			switch strings.ToLower(v) {
			case "", "fuse", "fuse2":
			case "nfs":
				return bad("blobfs mounts through FUSE only; use blob-csi-driver for NFS")
			default:
				return bad("want fuse or fuse2")
			}
		case strings.ToLower(AttrClientID):
			if !guidRE.MatchString(v) {
				return bad("want a GUID")
			}
			p.clientID = v
		case strings.ToLower(AttrSPNClientID):
			if !guidRE.MatchString(v) {
				return bad("want a GUID")
			}
			p.clientID = v
		case strings.ToLower(AttrIdentityClientID):
			if !guidRE.MatchString(v) {
				return bad("want a GUID")
			}
			p.identityID = v
		case strings.ToLower(AttrIdentityResourceID):
			if !strings.HasPrefix(strings.ToLower(v), "/subscriptions/") || strings.ContainsAny(v, " ?#") {
				return bad("want an Azure resource id /subscriptions/...")
			}
			p.identityRes = v
		case strings.ToLower(AttrTenantID), strings.ToLower(AttrSPNTenantID):
			if !tenantRE.MatchString(v) {
				return bad("want a tenant GUID or domain")
			}
			m.Storage.TenantID = v
		case strings.ToLower(AttrAuthType):
			if _, err := config.ParseAuthMode(v); err != nil || v == "" {
				return bad("want Key, SAS, MSI, SPN, WorkloadIdentity or Anonymous")
			}
			p.authType = v
		case strings.ToLower(AttrWorkloadIdentityTokens):
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("want true or false")
			}
			p.spec.perPod = b
		case strings.ToLower(AttrEndpointSuffix):
			if !slices.Contains(publicSuffixes, strings.ToLower(v)) && !p.d.allowCustomEndpoints {
				return bad("want one of " + strings.Join(publicSuffixes, ", ") + " (other suffixes need the driver's --allow-custom-endpoints)")
			}
			if !tenantRE.MatchString(v) {
				return bad("want a DNS suffix")
			}
			p.endpointSuffix = strings.ToLower(v) // resolved in finish, once the account is known
		case strings.ToLower(AttrEndpoint):
			if !p.d.allowCustomEndpoints {
				return fmt.Errorf("volume attribute %s: custom endpoints are disabled on this driver (start it with --allow-custom-endpoints): %w", k, ErrInvalid)
			}
			if err := validateEndpointURL(v); err != nil {
				return fmt.Errorf("volume attribute %s: %w", k, err)
			}
			m.Storage.Endpoint = strings.TrimSuffix(v, "/")
		case strings.ToLower(AttrBlockSizeMB):
			if err := parseMB(&m.Cache.BlockSizeMB, v); err != nil || m.Cache.BlockSizeMB == 0 {
				return bad("want a block size in MB, 1..4000")
			}
		case strings.ToLower(AttrCacheSizeMB):
			if err := parseMB(&m.Cache.DiskSizeMB, v); err != nil {
				return bad(err.Error())
			}
		case strings.ToLower(AttrPrefetch):
			if err := parseCount(&m.Cache.Prefetch, v); err != nil {
				return bad(err.Error())
			}
		case strings.ToLower(AttrUmask):
			if err := parseUmask(&m.FS.Umask, v); err != nil {
				return bad(err.Error())
			}
		case strings.ToLower(AttrUID):
			if err := parseID(&m.FS.UID, v); err != nil {
				return bad(err.Error())
			}
		case strings.ToLower(AttrGID):
			if err := parseID(&m.FS.GID, v); err != nil {
				return bad(err.Error())
			}
			p.explicitGID = true
		default:
			// The value is not echoed: an unknown key may hold anything.
			if hint, ok := attrHints[lk]; ok {
				return fmt.Errorf("volume attribute %s is not supported: %s: %w", k, hint, ErrInvalid)
			}
			return fmt.Errorf("volume attribute %s is not supported by blobfs: %w", k, ErrInvalid)
		}
	}
	return nil
}

// agree fills a location field from an attribute, or checks that the
// attribute matches what the volume id fixed.
func (p *attrParser) agree(key string, dst *string, fixed, v string) error {
	if fixed != "" && fixed != v {
		return fmt.Errorf("volume attribute %s=%q disagrees with the volume id (%q): %w", key, v, fixed, ErrInvalid)
	}
	*dst = v
	return nil
}

// secrets applies node-stage (or provisioner) secrets. Errors name keys,
// never values.
func (p *attrParser) secrets(secrets map[string]string) error {
	keys := make([]string, 0, len(secrets))
	for k := range secrets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := &p.spec.mount.Storage
	for _, k := range keys {
		v := secrets[k]
		switch strings.ToLower(k) {
		case SecretAccountName:
			if validateAccount(v) != nil {
				return fmt.Errorf("secret key %s: not a valid storage account name: %w", k, ErrInvalid)
			}
			if p.spec.loc.Account != "" && p.spec.loc.Account != v {
				return fmt.Errorf("secret key %s names a different storage account than the volume: %w", k, ErrInvalid)
			}
			p.spec.loc.Account = v
		case SecretAccountKey:
			if v == "" {
				return fmt.Errorf("secret key %s is empty: %w", k, ErrInvalid)
			}
			s.AccountKey = config.Secret(v)
		case SecretSASToken:
			v = strings.TrimPrefix(v, "?")
			if v == "" {
				return fmt.Errorf("secret key %s is empty: %w", k, ErrInvalid)
			}
			s.SAS = config.Secret(v)
		case SecretSPNClientSecret:
			if v == "" {
				return fmt.Errorf("secret key %s is empty: %w", k, ErrInvalid)
			}
			s.ClientSecret = config.Secret(v)
		default:
			return fmt.Errorf("secret key %s is not understood (want %s, %s, %s or %s): %w",
				k, SecretAccountName, SecretAccountKey, SecretSASToken, SecretSPNClientSecret, ErrInvalid)
		}
	}
	return nil
}

// capability checks the access type and mode and applies mount flags and
// the delegated fsGroup.
func (p *attrParser) capability(vc *csi.VolumeCapability) error {
	if vc == nil {
		return fmt.Errorf("volume capability is missing: %w", ErrInvalid)
	}
	if err := checkCapability(vc); err != nil {
		return err
	}
	m := &p.spec.mount
	mnt := vc.GetMount()
	if err := applyMountFlags(m, mnt.GetMountFlags()); err != nil {
		return err
	}
	if m.FS.GID != -1 {
		p.explicitGID = true // set by a mount option
	}
	p.spec.accessMode = vc.GetAccessMode().GetMode()
	if readerOnly(p.spec.accessMode) {
		m.FS.ReadOnly = true
	}
	if g := mnt.GetVolumeMountGroup(); g != "" {
		var gid int64
		if err := parseID(&gid, g); err != nil {
			return fmt.Errorf("volume mount group %q: %v: %w", g, err, ErrInvalid)
		}
		p.spec.mountGroup = g
		// An explicit gid (attribute or mount option) is the volume
		// author's decision and wins over the pod's fsGroup.
		if !p.explicitGID {
			m.FS.GID = gid
			// fsGroup means group members may read and write, as kubelet's
			// own chown+chmod would arrange.
			m.FS.Umask &^= 0o070
			p.spec.gidFromGroup = true
		}
	}
	return nil
}

// checkCapability accepts mount access with the access modes blobfs
// serves. MULTI_NODE_SINGLE_WRITER is refused: nothing can stop a second
// node writing to a container.
func checkCapability(vc *csi.VolumeCapability) error {
	if vc.GetBlock() != nil {
		return fmt.Errorf("block access is not supported, only mount: %w", ErrInvalid)
	}
	if vc.GetMount() == nil {
		return fmt.Errorf("volume capability has no mount access type: %w", ErrInvalid)
	}
	am := vc.GetAccessMode()
	if am == nil {
		return fmt.Errorf("volume capability has no access mode: %w", ErrInvalid)
	}
	switch am.GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return nil
	}
	return fmt.Errorf("access mode %s is not supported: %w", am.GetMode(), ErrInvalid)
}

func readerOnly(m csi.VolumeCapability_AccessMode_Mode) bool {
	return m == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY ||
		m == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
}

// finish resolves the location, endpoint and auth mode, and validates the
// whole configuration.
func (p *attrParser) finish() error {
	sp := &p.spec
	m := &sp.mount
	if sp.loc.Container == "" {
		return fmt.Errorf("volume id %q is not a blobfs volume id (blobfs#ACCOUNT#CONTAINER...) and volume attribute %s is not set: %w", sp.id, AttrContainerName, ErrInvalid)
	}
	if p.identityID != "" {
		p.clientID = p.identityID
	}
	m.Storage.Account = sp.loc.Account
	m.Storage.Container = sp.loc.Container
	m.Storage.Subdirectory = sp.loc.Prefix
	m.Storage.ClientID = p.clientID
	m.Storage.ManagedIdentityResourceID = p.identityRes
	if p.endpointSuffix != "" && m.Storage.Endpoint == "" {
		if sp.loc.Account == "" {
			return fmt.Errorf("volume attribute %s needs a storage account: %w", AttrEndpointSuffix, ErrInvalid)
		}
		m.Storage.Endpoint = "https://" + sp.loc.Account + ".blob." + p.endpointSuffix
	}
	if m.Storage.Endpoint == "" && sp.loc.Account == "" {
		return fmt.Errorf("no storage account: set volume attribute %s, the %s secret, or a volume id with the account: %w",
			AttrStorageAccount, SecretAccountName, ErrInvalid)
	}
	if m.Storage.TenantID == "" {
		m.Storage.TenantID = p.d.tenantID
	}
	if m.Storage.AuthorityHost == "" {
		m.Storage.AuthorityHost = p.d.authorityHost
	}
	if err := p.authMode(); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("volume settings: %w: %w", ErrInvalid, err)
	}
	return nil
}

// authMode picks the auth mode as blob-csi-driver users expect: per-pod
// workload identity when asked for, an explicit AzureStorageAuthType,
// else the secret that is present, else the managed identity a client id
// names.
func (p *attrParser) authMode() error {
	s := &p.spec.mount.Storage
	if p.spec.perPod {
		if p.authType != "" {
			if mode, _ := config.ParseAuthMode(p.authType); mode != config.AuthWorkloadIdentity {
				return fmt.Errorf("volume attribute %s=%s conflicts with %s=true: %w", AttrAuthType, p.authType, AttrWorkloadIdentityTokens, ErrInvalid)
			}
		}
		if p.clientID == "" {
			return fmt.Errorf("volume attribute %s=true needs %s (the identity's client id): %w", AttrWorkloadIdentityTokens, AttrClientID, ErrInvalid)
		}
		if s.TenantID == "" {
			return fmt.Errorf("volume attribute %s=true needs %s (or the driver's --tenant-id): %w", AttrWorkloadIdentityTokens, AttrTenantID, ErrInvalid)
		}
		s.AuthMode = config.AuthWorkloadIdentity
		return nil
	}
	if p.authType != "" {
		mode, _ := config.ParseAuthMode(p.authType)
		s.AuthMode = mode
		if mode == config.AuthWorkloadIdentity {
			return fmt.Errorf("volume attribute %s=%s: per-pod tokens need %s=true: %w", AttrAuthType, p.authType, AttrWorkloadIdentityTokens, ErrInvalid)
		}
		return nil
	}
	switch {
	case s.AccountKey != "":
		s.AuthMode = config.AuthKey
	case s.SAS != "":
		s.AuthMode = config.AuthSAS
	case s.ClientSecret != "":
		s.AuthMode = config.AuthSPN
	case p.clientID != "" || p.identityRes != "":
		s.AuthMode = config.AuthMSI
	case !p.requireAuth:
		// A StorageClass leaves credentials to the node-stage secret; a
		// publish of a staged volume mounts nothing.
	default:
		return fmt.Errorf("no credentials: give a node-stage secret with %s or %s, set %s=true with %s, or set %s: %w",
			SecretAccountKey, SecretSASToken, AttrWorkloadIdentityTokens, AttrClientID, AttrAuthType, ErrInvalid)
	}
	return nil
}

// validateEndpointURL accepts an http(s) blob service URL without a query
// or user info (a SAS or key belongs in a secret); the error never echoes
// the query.
func validateEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("endpoint is not a URL: %w", ErrInvalid)
	}
	if u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("endpoint %s://%s%s carries a query, fragment or user info (a SAS or key belongs in the node-stage secret): %w", u.Scheme, u.Host, u.Path, ErrInvalid)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("endpoint %q: want an http(s) URL: %w", raw, ErrInvalid)
	}
	return nil
}

// podToken is one entry of the serviceAccount.tokens volume context.
type podToken struct {
	Token               string `json:"token"`
	ExpirationTimestamp string `json:"expirationTimestamp"`
}

// podIdentity is who a per-pod workload identity mount acts as.
type podIdentity struct {
	namespace      string
	serviceAccount string
	token          string
}

// parsePodIdentity reads the pod's service account and its Azure AD
// federation token from the volume context kubelet sends to
// NodePublishVolume (CSIDriver podInfoOnMount: true and tokenRequests with
// audience api://AzureADTokenExchange). Errors never contain the token.
func parsePodIdentity(attrs map[string]string) (podIdentity, error) {
	var id podIdentity
	raw, ok := attrs[ctxTokens]
	if !ok || raw == "" {
		return id, fmt.Errorf("no %s in the volume context: the CSIDriver must request tokens (tokenRequests: [{audience: %s}], requiresRepublish: true): %w", ctxTokens, tokenAudienceAzure, ErrInvalid)
	}
	var toks map[string]podToken
	if err := json.Unmarshal([]byte(raw), &toks); err != nil {
		return id, fmt.Errorf("volume context %s is not a JSON map of audience to token: %w", ctxTokens, ErrInvalid)
	}
	t, ok := toks[tokenAudienceAzure]
	if !ok || t.Token == "" {
		return id, fmt.Errorf("volume context %s has no token for audience %s: %w", ctxTokens, tokenAudienceAzure, ErrInvalid)
	}
	id.token = t.Token
	id.namespace, id.serviceAccount = attrs[ctxPodNamespace], attrs[ctxServiceAccount]
	if id.namespace == "" || id.serviceAccount == "" {
		return id, fmt.Errorf("no %s or %s in the volume context: the CSIDriver must set podInfoOnMount: true: %w", ctxPodNamespace, ctxServiceAccount, ErrInvalid)
	}
	return id, nil
}
