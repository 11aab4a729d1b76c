package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/internal/config"
)

// ContainerAdmin creates, deletes and probes the containers of one storage
// account. *azstore.Containers satisfies it.
type ContainerAdmin interface {
	// Create makes a private container; it fails with an error wrapping
	// blob.ErrExists if the container exists.
	Create(ctx context.Context, name string) error
	// Delete deletes a container and everything in it; it fails with an
	// error wrapping blob.ErrContainerNotFound if there is none.
	Delete(ctx context.Context, name string) error
	// Exists reports whether the container exists.
	Exists(ctx context.Context, name string) (bool, error)
}

// AdminFactory returns the ContainerAdmin of a storage account, authorised
// by creds (from the StorageClass's provisioner secret), or, when creds are
// empty, by the controller's own identity (workload identity of its pod).
type AdminFactory func(ctx context.Context, account string, creds Credentials) (ContainerAdmin, error)

// ControllerConfig configures the Controller service.
type ControllerConfig struct {
	// Admins reaches storage for dynamic provisioning. Nil serves static
	// volumes only: CREATE_DELETE_VOLUME is not advertised.
	Admins AdminFactory
	// DefaultAccount is the storage account of StorageClasses that name
	// none.
	DefaultAccount string
	// AllowCustomEndpoints lets StorageClasses set the endpoint parameter
	// (see AttrEndpoint).
	AllowCustomEndpoints bool
	// Name is the driver name recorded in logs; empty means DriverName.
	Name   string
	Logger *slog.Logger
}

// Controller serves the CSI Controller service: dynamic provisioning of a
// container (or a prefix of a shared one) per PVC, and capability checks.
// There is nothing to attach, so there is no ControllerPublish.
type Controller struct {
	csi.UnimplementedControllerServer
	cfg   ControllerConfig
	log   *slog.Logger
	locks *keyLocks // by volume name (CreateVolume) and volume id (DeleteVolume)
}

// NewController returns the Controller service.
func NewController(cfg ControllerConfig) (*Controller, error) {
	if cfg.DefaultAccount != "" {
		if err := validateAccount(cfg.DefaultAccount); err != nil {
			return nil, fmt.Errorf("csi: default storage account: %w", err)
		}
	}
	if cfg.Name == "" {
		cfg.Name = DriverName
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Controller{cfg: cfg, log: log.With("service", "controller", "driver", cfg.Name), locks: newKeyLocks()}, nil
}

// probeContainer is looked up by Probe: any answer from the service
// (present or not) shows it is reachable with the controller's identity.
const probeContainer = "blobfs-csi-probe"

// Probe reports whether storage answers, when a default account is
// configured; a controller without one has nothing to check.
func (c *Controller) Probe(ctx context.Context) error {
	if c.cfg.Admins == nil || c.cfg.DefaultAccount == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	admin, err := c.cfg.Admins(ctx, c.cfg.DefaultAccount, Credentials{})
	if err != nil {
		return fmt.Errorf("storage account %s: %w", c.cfg.DefaultAccount, err)
	}
	if _, err := admin.Exists(ctx, probeContainer); err != nil {
		return fmt.Errorf("storage account %s does not answer: %w", c.cfg.DefaultAccount, err)
	}
	return nil
}

// ControllerGetCapabilities implements csi.ControllerServer.
func (c *Controller) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	types := []csi.ControllerServiceCapability_RPC_Type{csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER}
	if c.cfg.Admins != nil {
		types = append(types, csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME)
	}
	resp := &csi.ControllerGetCapabilitiesResponse{}
	for _, t := range types {
		resp.Capabilities = append(resp.Capabilities, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

// locationKeys are StorageClass parameters that CreateVolume turns into
// the volume id; they are not copied into the volume context, where they
// would contradict the id (a StorageClass prefix is the parent of each
// volume's prefix).
var locationKeys = []string{AttrStorageAccount, AttrContainerName, AttrContainerNamePrefix, AttrSubDir, AttrPrefix}

// CreateVolume implements csi.ControllerServer.
//
// Parameters (StorageClass): without containerName, each volume gets its
// own container, named after the volume ("pvc-<uid>", with
// containerNamePrefix in front if set), created here and recorded as owned
// in the volume id, so DeleteVolume deletes it. With containerName, every
// volume shares that container (created if missing, never deleted); with
// prefix/subDir as well, each volume is "<prefix>/<volume name>" in it and
// its data is retained on delete (blobs under a prefix cannot be owned
// atomically). Every other parameter is validated as a volume attribute
// now, so a typo fails the PVC instead of every mount, and passed to the
// node in the volume context. Capacity is not enforced (Blob has none):
// the response reports 0, "unknown".
//
// Idempotent: the container name and prefix are functions of the volume
// name, so a retry finds the container it made and returns the same id.
func (c *Controller) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "volume name is missing")
	}
	caps := req.GetVolumeCapabilities()
	if len(caps) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are missing")
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volume content sources (snapshots, clones) are not supported")
	}
	if c.cfg.Admins == nil {
		return nil, status.Error(codes.Unimplemented, "dynamic provisioning is not configured on this controller; use static PVs")
	}
	p := &attrParser{d: specDefaults{allowCustomEndpoints: c.cfg.AllowCustomEndpoints}, provisioning: true}
	p.spec.mount = baseMount()
	if err := p.attrs(req.GetParameters()); err != nil {
		return nil, toStatus(err)
	}
	creds, account, err := provisionerSecrets(req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	loc, err := c.locate(name, p, account)
	if err != nil {
		return nil, toStatus(err)
	}
	// Validate what the node will be given, with every capability's mount
	// options, now rather than at the first mount.
	for _, vc := range caps {
		if err := checkCapability(vc); err != nil {
			return nil, toStatus(err)
		}
		scratch := p.spec.mount
		if err := applyMountFlags(&scratch, vc.GetMount().GetMountFlags()); err != nil {
			return nil, toStatus(err)
		}
	}
	p.spec.id, p.spec.loc = loc.String(), loc
	if err := p.finish(); err != nil {
		return nil, toStatus(err)
	}
	if len(p.spec.id) > maxVolumeIDLen {
		return nil, status.Errorf(codes.InvalidArgument, "volume id %q would exceed the CSI limit of %d bytes; shorten the prefix parameter", p.spec.id, maxVolumeIDLen)
	}

	release, ok := c.locks.tryLock("name/" + name)
	if !ok {
		return nil, aborted("volume", name)
	}
	defer release()

	admin, err := c.cfg.Admins(ctx, loc.Account, creds)
	if err != nil {
		return nil, statusf(err, "storage account %s", loc.Account)
	}
	if loc.Owned {
		err := admin.Create(ctx, loc.Container)
		switch {
		case err == nil:
			c.log.InfoContext(ctx, "created container", "volume", name, "account", loc.Account, "container", loc.Container)
		case errors.Is(err, blob.ErrExists):
			// A retry of this very call: the name is derived from the
			// volume name, which the CO keeps unique.
			c.log.InfoContext(ctx, "container exists, reusing it", "volume", name, "container", loc.Container)
		default:
			return nil, storageStatus(err, "creating container %s", loc.Container)
		}
	} else {
		exists, err := admin.Exists(ctx, loc.Container)
		if err != nil {
			return nil, storageStatus(err, "looking up container %s", loc.Container)
		}
		if !exists {
			if err := admin.Create(ctx, loc.Container); err != nil && !errors.Is(err, blob.ErrExists) {
				return nil, storageStatus(err, "creating shared container %s", loc.Container)
			}
			c.log.InfoContext(ctx, "created shared container (it is never deleted by the driver)", "container", loc.Container)
		}
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      p.spec.id,
		CapacityBytes: 0,
		VolumeContext: volumeContext(req.GetParameters()),
	}}, nil
}

// locate decides where a new volume lives.
func (c *Controller) locate(name string, p *attrParser, secretAccount string) (VolumeID, error) {
	var loc VolumeID
	loc.Account = p.spec.loc.Account
	if secretAccount != "" {
		if loc.Account != "" && loc.Account != secretAccount {
			return loc, status.Errorf(codes.InvalidArgument, "provisioner secret key %s names a different account than parameter %s", SecretAccountName, AttrStorageAccount)
		}
		loc.Account = secretAccount
	}
	if loc.Account == "" {
		loc.Account = c.cfg.DefaultAccount
	}
	if loc.Account == "" {
		return loc, status.Errorf(codes.InvalidArgument, "no storage account: set parameter %s (or the controller's --storage-account)", AttrStorageAccount)
	}
	switch {
	case p.spec.loc.Container == "":
		if p.parentPrefix != "" {
			return loc, status.Errorf(codes.InvalidArgument, "parameter %s needs %s: prefix volumes share one container", AttrPrefix, AttrContainerName)
		}
		loc.Container = containerNameFor(p.namePrefix, name)
		loc.Owned = true
	case p.namePrefix != "":
		return loc, status.Errorf(codes.InvalidArgument, "parameters %s and %s exclude each other", AttrContainerName, AttrContainerNamePrefix)
	default:
		loc.Container = p.spec.loc.Container
		if p.parentPrefix != "" {
			loc.Prefix = p.parentPrefix + "/" + prefixSegmentFor(name)
		}
	}
	return loc, nil
}

// containerNameFor derives a container name from a volume name: the name
// itself where it is a valid container name ("pvc-<uid>", what
// external-provisioner sends), else a sanitized form with a hash of the
// original, so different names never share a container.
func containerNameFor(namePrefix, name string) string {
	base := name
	if namePrefix != "" {
		base = namePrefix + "-" + name
	}
	if validateContainer(base) == nil {
		return base
	}
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if s := b.String(); len(s) > 0 && s[len(s)-1] != '-' {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	hash := shortHash(name)[:16]
	if max := 63 - len(hash) - 1; len(s) > max {
		s = strings.TrimRight(s[:max], "-")
	}
	if s == "" {
		return "vol-" + hash
	}
	return s + "-" + hash
}

// prefixSegmentFor is the per-volume segment of a prefix volume: the name
// when it is a plain blob name segment, else a hash of it.
func prefixSegmentFor(name string) string {
	if !strings.ContainsAny(name, "/#%") && len(name) <= 128 {
		if p, err := cleanPrefix(name); err == nil && p == name {
			return name
		}
	}
	return "vol-" + shortHash(name)[:16]
}

// volumeContext is what the node gets: every parameter except the
// location (which is in the volume id) and what external-provisioner
// adds about the PVC.
func volumeContext(params map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range params {
		if strings.HasPrefix(k, k8sPrefix) {
			continue
		}
		skip := false
		for _, lk := range locationKeys {
			if strings.EqualFold(k, lk) {
				skip = true
			}
		}
		if !skip {
			out[k] = v
		}
	}
	return out
}

// provisionerSecrets reads the StorageClass's provisioner (or controller
// delete) secret. Errors name keys, never values.
func provisionerSecrets(secrets map[string]string) (Credentials, string, error) {
	var c Credentials
	var account string
	for k, v := range secrets {
		switch strings.ToLower(k) {
		case SecretAccountName:
			if validateAccount(v) != nil {
				return c, "", status.Errorf(codes.InvalidArgument, "secret key %s is not a valid storage account name", k)
			}
			account = v
		case SecretAccountKey:
			c.AccountKey = config.Secret(v)
		case SecretSASToken:
			c.SAS = config.Secret(strings.TrimPrefix(v, "?"))
		default:
			return c, "", status.Errorf(codes.InvalidArgument, "secret key %s is not understood (want %s, %s or %s)", k, SecretAccountName, SecretAccountKey, SecretSASToken)
		}
	}
	return c, account, nil
}

// storageStatus maps a storage error to a code the CO acts on sensibly:
// permission problems and missing containers need a person, throttling and
// outages a retry.
func storageStatus(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, blob.ErrPermission):
		return status.Errorf(codes.PermissionDenied, "%s: %v", msg, err)
	case errors.Is(err, blob.ErrContainerNotFound), errors.Is(err, blob.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: %v", msg, err)
	case errors.Is(err, blob.ErrThrottled), errors.Is(err, blob.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "%s: %v", msg, err)
	case errors.Is(err, blob.ErrInvalid), errors.Is(err, ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "%s: %v", msg, err)
	}
	return statusf(err, "%s", msg)
}

// DeleteVolume implements csi.ControllerServer. It deletes only what the
// driver created: a container whose volume id carries the "owned" flag.
// Volumes in a shared container, prefix volumes and static volumes are
// retained (their data was not created by the driver, or not only for
// this volume). external-provisioner calls DeleteVolume only for PVs it
// provisioned whose reclaim policy is Delete; Retain never gets here.
//
// Idempotent: a container that is already gone, and an id that is not a
// blobfs id (nothing this driver could have created), are success.
func (c *Controller) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is missing")
	}
	loc, err := ParseVolumeID(id)
	if err != nil {
		c.log.InfoContext(ctx, "delete: not a volume id this driver makes; nothing to delete", "volume_id", id)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if !loc.Owned {
		c.log.InfoContext(ctx, "delete: volume data retained (not created by blobfs for this volume)", "volume_id", id)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if c.cfg.Admins == nil {
		return nil, status.Error(codes.FailedPrecondition, "the volume's container was created by blobfs, but this controller has no storage access configured to delete it")
	}
	release, ok := c.locks.tryLock("id/" + id)
	if !ok {
		return nil, aborted("volume", id)
	}
	defer release()
	creds, account, err := provisionerSecrets(req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	if account != "" && loc.Account != "" && account != loc.Account {
		return nil, status.Errorf(codes.InvalidArgument, "secret key %s names a different account than the volume id", SecretAccountName)
	}
	if loc.Account == "" {
		loc.Account = account
	}
	admin, err := c.cfg.Admins(ctx, loc.Account, creds)
	if err != nil {
		return nil, statusf(err, "storage account %s", loc.Account)
	}
	switch err := admin.Delete(ctx, loc.Container); {
	case err == nil:
		c.log.InfoContext(ctx, "deleted container", "volume_id", id, "container", loc.Container)
	case errors.Is(err, blob.ErrContainerNotFound), errors.Is(err, blob.ErrNotFound):
	default:
		return nil, storageStatus(err, "deleting container %s", loc.Container)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities implements csi.ControllerServer. A volume is
// known when its container exists (checked when storage access is
// configured). Unsupported capabilities are answered without confirmation
// and with the reason, as the spec asks, not with an error.
func (c *Controller) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are missing")
	}
	var loc VolumeID
	if IsBlobfsVolumeID(id) {
		var err error
		if loc, err = ParseVolumeID(id); err != nil {
			return nil, toStatus(err)
		}
	}
	for k, v := range req.GetVolumeContext() {
		switch strings.ToLower(k) {
		case strings.ToLower(AttrContainerName):
			if loc.Container == "" {
				loc.Container = v
			}
		case strings.ToLower(AttrStorageAccount):
			if loc.Account == "" {
				loc.Account = v
			}
		}
	}
	if loc.Container == "" {
		return nil, status.Errorf(codes.InvalidArgument, "volume id %q names no container and the volume context has no %s", id, AttrContainerName)
	}
	if loc.Account == "" {
		loc.Account = c.cfg.DefaultAccount
	}
	if c.cfg.Admins != nil && loc.Account != "" {
		creds, _, err := provisionerSecrets(req.GetSecrets())
		if err != nil {
			return nil, toStatus(err)
		}
		admin, err := c.cfg.Admins(ctx, loc.Account, creds)
		if err != nil {
			return nil, statusf(err, "storage account %s", loc.Account)
		}
		exists, err := admin.Exists(ctx, loc.Container)
		if err != nil {
			return nil, storageStatus(err, "looking up container %s", loc.Container)
		}
		if !exists {
			return nil, status.Errorf(codes.NotFound, "volume %q: container %s does not exist in account %s", id, loc.Container, loc.Account)
		}
	}
	for _, vc := range req.GetVolumeCapabilities() {
		scratch := baseMount()
		err := checkCapability(vc)
		if err == nil {
			err = applyMountFlags(&scratch, vc.GetMount().GetMountFlags())
		}
		if err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}
