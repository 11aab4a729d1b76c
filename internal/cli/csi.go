package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/blobfs/blobfs/auth"
	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/csi"
	"github.com/blobfs/blobfs/internal/backend"
	"github.com/blobfs/blobfs/internal/config"
)

var csiModes = []string{"node", "controller", "all", "mounter"}

// CSIOptions configures `blobfs csi`.
type CSIOptions struct {
	Endpoint string // unix:///ABSOLUTE/PATH of the gRPC socket
	NodeID   string // Kubernetes node name; required for node and all
	Mode     string // one of csiModes

	// DriverName is the CSI driver name (the CSIDriver object).
	DriverName string
	// StateDir keeps node records, per-pod token files and the mount
	// supervisor's settings; a hostPath shared by the node plugin and the
	// mounter container at the same path.
	StateDir string
	// MounterEndpoint is the mount supervisor's socket (node: dial;
	// mounter: listen).
	MounterEndpoint string
	// CacheDir is the node block cache every mount shares (mounter, all).
	CacheDir string
	// KubeletDir is kubelet's root directory; the supervisor mounts only
	// under it and StateDir.
	KubeletDir string
	// BlobEndpoint is the controller's blob service URL for every account
	// (Azurite, private clouds); empty means https://ACCOUNT.blob.core.windows.net.
	BlobEndpoint string
	// StorageAccount is the controller's default account for
	// StorageClasses that name none.
	StorageAccount string
	// TenantID is the default Entra tenant of workload identity volumes
	// (default: $AZURE_TENANT_ID).
	TenantID string
	// AllowCustomEndpoints lets volumes name their own blob endpoint URL.
	AllowCustomEndpoints bool
}

// DefaultCSIOptions returns the defaults the flags start from. The paths
// are what the Helm chart mounts: the registrar's socket directory at
// /csi, the plugin directory under kubelet's, and the node's NVMe cache.
func DefaultCSIOptions() CSIOptions {
	return CSIOptions{
		Endpoint:        "unix:///csi/csi.sock",
		Mode:            "all",
		DriverName:      csi.DriverName,
		StateDir:        "/var/lib/kubelet/plugins/" + csi.DriverName,
		MounterEndpoint: "unix:///var/lib/kubelet/plugins/" + csi.DriverName + "/mounter.sock",
		CacheDir:        "/var/cache/blobfs",
		KubeletDir:      "/var/lib/kubelet",
	}
}

// SocketPath returns the filesystem path of Endpoint.
func (o CSIOptions) SocketPath() (string, error) {
	p, err := csi.SocketPath(o.Endpoint)
	if err != nil {
		return "", fmt.Errorf("--endpoint %q: want unix:///ABSOLUTE/PATH, e.g. unix:///csi/csi.sock", o.Endpoint)
	}
	return p, nil
}

// Validate checks the options.
func (o CSIOptions) Validate() error {
	var errs []error
	if o.Mode != "mounter" {
		if _, err := o.SocketPath(); err != nil {
			errs = append(errs, err)
		}
	}
	if !oneOf(o.Mode, csiModes) {
		errs = append(errs, fmt.Errorf("--mode %q: must be one of %s", o.Mode, strings.Join(csiModes, "|")))
	}
	if o.NodeID == "" && (o.Mode == "node" || o.Mode == "all") {
		errs = append(errs, fmt.Errorf("--node-id: required with --mode %s (pass the Kubernetes node name, e.g. --node-id=$(KUBE_NODE_NAME))", o.Mode))
	}
	if _, err := csi.SocketPath(o.MounterEndpoint); err != nil {
		errs = append(errs, fmt.Errorf("--mounter-endpoint %q: want unix:///ABSOLUTE/PATH", o.MounterEndpoint))
	}
	for flag, p := range map[string]string{"--state-dir": o.StateDir, "--cache-dir": o.CacheDir, "--kubelet-dir": o.KubeletDir} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: must be an absolute path", flag, p))
		}
	}
	if o.DriverName == "" {
		errs = append(errs, errors.New("--driver-name: must not be empty"))
	}
	if o.StorageAccount != "" {
		if err := validateAccount(o.StorageAccount); err != nil {
			errs = append(errs, fmt.Errorf("--storage-account: %w", err))
		}
	}
	return errors.Join(errs...)
}

func newCSICmd(d *Deps) *cobra.Command {
	o := DefaultCSIOptions()
	cmd := &cobra.Command{
		Use:   "csi --endpoint unix:///PATH --node-id ID --mode node|controller|all|mounter",
		Short: "Serve the Kubernetes CSI driver for ReadWriteMany blobfs volumes",
		Long: `Serve the Container Storage Interface on a unix socket so Kubernetes can
provision blobfs volumes from a StorageClass and mount them into pods as
ReadWriteMany PVCs.

This is what the Helm chart runs; cluster operators do not usually start it
by hand. Modes:
  node        the node plugin (DaemonSet): stages one FUSE mount per volume
              per node and bind-mounts it into every pod on the node, so the
              pods share one mount and the node cache; per-pod workload
              identity mounts (one per volume and identity) at publish.
  mounter     the mount supervisor: a second container in the node
              DaemonSet's pod that runs the blobfs mount processes, so they
              keep serving when the node plugin container restarts. It
              listens on --mounter-endpoint; the node plugin dials it.
  controller  dynamic provisioning (Deployment, next to csi-provisioner):
              a container, or a prefix of a shared one, per PVC.
  all         identity, controller and node in one process with the mount
              supervisor in-process (tests, single-node clusters); mounts
              end with the process.

Volume attributes, node-stage secrets and mountOptions of blob-csi-driver
(containerName, storageAccount, AzureStorageAuthType, clientID,
mountWithWorkloadIdentityToken, azurestorageaccountkey, -o allow_other,
--file-cache-timeout-in-seconds, ...) carry over where they mean the same;
anything else is refused by name. Deploy the CSIDriver with
podInfoOnMount: true, tokenRequests [{audience: api://AzureADTokenExchange}],
requiresRepublish: true, and fsGroupPolicy: File (the driver takes the
pod's fsGroup as the mount's group instead of kubelet chowning every blob).`,
		Example: `  # Node plugin and its mount supervisor, as the DaemonSet runs them
  blobfs csi --mode node --endpoint unix:///csi/csi.sock --node-id "$KUBE_NODE_NAME"
  blobfs csi --mode mounter --cache-dir /mnt/nvme/blobfs-cache

  # Controller (dynamic provisioning), next to csi-provisioner
  blobfs csi --mode controller --endpoint unix:///csi/csi.sock --storage-account mydata`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.TenantID == "" {
				o.TenantID = d.env("AZURE_TENANT_ID")
			}
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
	f.Var(newEnum(&o.Mode, "mode", csiModes...), "mode", "which part to serve: "+strings.Join(csiModes, "|"))
	f.StringVar(&o.StateDir, "state-dir", o.StateDir, "node state `DIR` (hostPath shared by the node plugin and the mounter at the same path)")
	f.StringVar(&o.MounterEndpoint, "mounter-endpoint", o.MounterEndpoint, "mount supervisor socket `URL`, unix:///ABSOLUTE/PATH")
	f.StringVar(&o.CacheDir, "cache-dir", o.CacheDir, "node block cache `DIR` shared by every mount (mounter and all)")
	f.StringVar(&o.KubeletDir, "kubelet-dir", o.KubeletDir, "kubelet's root `DIR`; the supervisor mounts only under it and --state-dir")
	f.StringVar(&o.StorageAccount, "storage-account", o.StorageAccount, "controller: storage `ACCOUNT` of StorageClasses that name none")
	f.StringVar(&o.TenantID, "tenant-id", o.TenantID, "node: Entra tenant of workload identity volumes without tenantID (default $AZURE_TENANT_ID)")
	f.StringVar(&o.BlobEndpoint, "blob-endpoint", o.BlobEndpoint, "controller: blob service `URL` used to create and delete containers (default https://ACCOUNT.blob.core.windows.net)")
	f.BoolVar(&o.AllowCustomEndpoints, "allow-custom-endpoints", o.AllowCustomEndpoints,
		"let volumes set a blob endpoint URL or non-public endpoint suffix (Azurite, private clouds); a mount sends its credential there")
	f.StringVar(&o.DriverName, "driver-name", o.DriverName, "CSI driver `NAME` (the CSIDriver object)")
	return cmd
}

// csiContainerAdmins returns how the controller reaches storage for
// dynamic provisioning: with the StorageClass's provisioner secret (account
// key or SAS) when it has one, else with the controller's own identity from
// its environment (workload identity on AKS), built once.
func csiContainerAdmins(o CSIOptions, d *Deps, log *slog.Logger) csi.AdminFactory {
	var (
		once     sync.Once
		ownCred  azstore.Credential
		ownError error
	)
	own := func() (azstore.Credential, error) {
		once.Do(func() {
			s, err := config.StorageFromEnv(d.LookupEnv)
			if err != nil {
				ownError = err
				return
			}
			c, err := auth.New(s, auth.Options{Logger: log})
			switch {
			case err != nil:
				ownError = fmt.Errorf("controller identity: %w", err)
			case c.Kind() == auth.KindAnonymous:
				ownError = fmt.Errorf("controller identity: %s cannot create containers", c.Describe())
			default:
				ownCred, ownError = backend.StoreCredential(c, s)
			}
		})
		return ownCred, ownError
	}
	return func(ctx context.Context, account string, creds csi.Credentials) (csi.ContainerAdmin, error) {
		endpoint := o.BlobEndpoint
		if endpoint == "" {
			endpoint = "https://" + account + ".blob.core.windows.net"
		}
		var cred azstore.Credential
		switch {
		case creds.AccountKey != "":
			cred = azstore.SharedKey(account, creds.AccountKey.Reveal())
		case creds.SAS != "":
			cred = azstore.SAS(creds.SAS.Reveal())
		default:
			var err error
			if cred, err = own(); err != nil {
				return nil, err
			}
		}
		return azstore.NewContainers(azstore.Config{ServiceURL: endpoint, Credential: cred, Logger: log})
	}
}

// runCSI serves CSI until ctx is done.
func runCSI(ctx context.Context, d *Deps, o CSIOptions) error {
	log := d.Logger.With("component", "csi", "mode", o.Mode)
	version := d.Build().Version
	// Listen first: a wrong socket path fails before anything is created
	// on the node.
	endpoint := o.Endpoint
	if o.Mode == "mounter" {
		endpoint = o.MounterEndpoint
		// The supervisor's socket lives in its own state directory by
		// default, which is the supervisor's to create.
		if sock, err := csi.SocketPath(endpoint); err == nil && filepath.Dir(sock) == filepath.Clean(o.StateDir) {
			if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
				return fmt.Errorf("state directory: %w", err)
			}
		}
	}
	lis, err := csi.Listen(endpoint)
	if err != nil {
		return err
	}
	defer lis.Close()
	if o.Mode == "mounter" {
		sup, err := csi.NewSupervisor(csi.SupervisorConfig{
			StateDir: o.StateDir, CacheDir: o.CacheDir,
			MountRoots: []string{o.KubeletDir, o.StateDir}, Logger: log,
		})
		if err != nil {
			return err
		}
		sup.Recover(ctx)
		log.InfoContext(ctx, "mount supervisor serving", "endpoint", o.MounterEndpoint, "version", version)
		return sup.Serve(ctx, lis)
	}

	var svc csi.Services
	var probes []func(context.Context) error
	if o.Mode == "node" || o.Mode == "all" {
		var volumes csi.VolumeMounter
		if o.Mode == "all" {
			sup, err := csi.NewSupervisor(csi.SupervisorConfig{
				StateDir: o.StateDir, CacheDir: o.CacheDir,
				MountRoots: []string{o.KubeletDir, o.StateDir}, Logger: log,
			})
			if err != nil {
				return err
			}
			sup.Recover(ctx)
			volumes = sup
		} else {
			client, err := csi.NewSupervisorClient(o.MounterEndpoint)
			if err != nil {
				return err
			}
			volumes = client
		}
		node, err := csi.NewNode(csi.NodeConfig{
			NodeID:               o.NodeID,
			Mounter:              &csi.SystemMounter{Volumes: volumes},
			StateDir:             o.StateDir,
			TenantID:             o.TenantID,
			AuthorityHost:        d.env("AZURE_AUTHORITY_HOST"),
			AllowCustomEndpoints: o.AllowCustomEndpoints,
			Logger:               log,
		})
		if err != nil {
			return err
		}
		node.Recover(ctx)
		svc.Node = node
		probes = append(probes, node.Probe)
	}
	if o.Mode == "controller" || o.Mode == "all" {
		ctrl, err := csi.NewController(csi.ControllerConfig{
			Admins:               csiContainerAdmins(o, d, log),
			DefaultAccount:       o.StorageAccount,
			AllowCustomEndpoints: o.AllowCustomEndpoints,
			Name:                 o.DriverName,
			Logger:               log,
		})
		if err != nil {
			return err
		}
		svc.Controller = ctrl
		probes = append(probes, ctrl.Probe)
	}
	id, err := csi.NewIdentity(o.DriverName, version, probes...)
	if err != nil {
		return err
	}
	svc.Identity = id
	log.InfoContext(ctx, "csi driver serving", "endpoint", o.Endpoint, "driver", o.DriverName, "node_id", o.NodeID, "version", version)
	return csi.Serve(ctx, lis, log, svc)
}
