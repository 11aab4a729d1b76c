package csi

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Identity serves the CSI Identity service: the driver's name and
// version, its capabilities, and a Probe that reflects real health.
type Identity struct {
	csi.UnimplementedIdentityServer
	name, version string
	probes        []func(context.Context) error
}

// NewIdentity returns the Identity service. Probe runs every probe (the
// node's: the mount supervisor answers and can open /dev/fuse; the
// controller's: storage answers) and reports the first failure.
func NewIdentity(name, version string, probes ...func(context.Context) error) (*Identity, error) {
	if name == "" {
		name = DriverName
	}
	if version == "" {
		return nil, fmt.Errorf("csi: identity needs a version: %w", ErrInvalid)
	}
	return &Identity{name: name, version: version, probes: probes}, nil
}

// GetPluginInfo implements csi.IdentityServer.
func (i *Identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: i.name, VendorVersion: i.version}, nil
}

// GetPluginCapabilities implements csi.IdentityServer. The plugin as a
// whole has a controller service (dynamic provisioning), whichever part
// this process serves. Volumes are reachable from every node: no
// topology.
func (i *Identity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_CONTROLLER_SERVICE,
		}},
	}}}, nil
}

// Probe implements csi.IdentityServer. An unhealthy plugin answers
// FAILED_PRECONDITION with the reason, so the livenessprobe sidecar (and
// whoever reads its log) sees why.
func (i *Identity) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	for _, p := range i.probes {
		if err := p(ctx); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "not ready: %v", err)
		}
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
