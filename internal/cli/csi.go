package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/spf13/cobra"
)

var csiModes = []string{"node", "controller", "all"}

// CSIOptions configures `blobfs csi`.
type CSIOptions struct {
	Endpoint string // unix:///ABSOLUTE/PATH of the gRPC socket
	NodeID   string // Kubernetes node name; required for node and all
	Mode     string // one of csiModes
}

// DefaultCSIOptions returns the defaults the flags start from.
func DefaultCSIOptions() CSIOptions {
	return CSIOptions{Endpoint: "unix:///csi/csi.sock", Mode: "all"}
}

// SocketPath returns the filesystem path of Endpoint.
func (o CSIOptions) SocketPath() (string, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || u.Scheme != "unix" || u.Host != "" || !path.IsAbs(u.Path) || u.RawQuery != "" {
		return "", fmt.Errorf("--endpoint %q: want unix:///ABSOLUTE/PATH, e.g. unix:///csi/csi.sock", o.Endpoint)
	}
	return path.Clean(u.Path), nil
}

// Validate checks the options.
func (o CSIOptions) Validate() error {
	var errs []error
	if _, err := o.SocketPath(); err != nil {
		errs = append(errs, err)
	}
	if !oneOf(o.Mode, csiModes) {
		errs = append(errs, fmt.Errorf("--mode %q: must be one of %s", o.Mode, strings.Join(csiModes, "|")))
	}
	if o.NodeID == "" && o.Mode != "controller" {
		errs = append(errs, fmt.Errorf("--node-id: required with --mode %s (pass the Kubernetes node name, e.g. --node-id=$(KUBE_NODE_NAME))", o.Mode))
	}
	return errors.Join(errs...)
}

func newCSICmd(d *Deps) *cobra.Command {
	o := DefaultCSIOptions()
	cmd := &cobra.Command{
		Use:   "csi --endpoint unix:///PATH --node-id ID --mode node|controller|all",
		Short: "Serve the Kubernetes CSI driver for ReadWriteMany blobfs volumes",
		Long: `Serve the Container Storage Interface on a unix socket so Kubernetes can
provision blobfs volumes from a StorageClass and mount them into pods as
ReadWriteMany PVCs.

This is what the Helm chart's node DaemonSet (--mode node) and controller
Deployment (--mode controller) run; cluster operators do not usually start
it by hand. In node mode all pods on a node share one FUSE mount and one
node cache per volume, per-pod workload identity tokens are honoured, and
mounts keep serving when the driver restarts. Volume attributes and
mountOptions of blob-csi-driver carry over where they mean the same.

--mode all serves identity, controller and node services from one process
(handy for tests and single-node clusters).

Status: flags are parsed and validated; the driver lands with issue #7.`,
		Example: `  # Node plugin, as the DaemonSet runs it
  blobfs csi --mode node --endpoint unix:///csi/csi.sock --node-id "$KUBE_NODE_NAME"

  # Controller (dynamic provisioning), next to csi-provisioner
  blobfs csi --mode controller --endpoint unix:///csi/csi.sock`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return usageError(err)
			}
			return runCSI(cmd.Context(), d, o)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "gRPC listen socket `URL`, unix:///ABSOLUTE/PATH")
	f.StringVar(&o.NodeID, "node-id", o.NodeID, "node `ID`: this node's Kubernetes name; required for --mode node and all")
	f.Var(newEnum(&o.Mode, "mode", csiModes...), "mode", "which CSI services to serve: "+strings.Join(csiModes, "|"))
	return cmd
}

// runCSI serves CSI. It is the seam issue #7 fills.
func runCSI(ctx context.Context, d *Deps, o CSIOptions) error {
	d.Logger.DebugContext(ctx, "csi options valid", "endpoint", o.Endpoint, "node_id", o.NodeID, "mode", o.Mode)
	return notImplemented("csi", issueCSI)
}
