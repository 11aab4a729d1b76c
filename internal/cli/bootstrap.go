package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// BootstrapOptions configures `blobfs bootstrap`.
type BootstrapOptions struct {
	Account    string
	Container  string
	ClientID   string // workload identity's client ID
	TenantID   string
	Namespace  string
	GPUWorkers int
	ConfigFile string // several clusters/regions; flags override it
	OutputDir  string // empty: write YAML to stdout
	PrintAz    bool   // print the az commands for what Kubernetes cannot create
}

// DefaultBootstrapOptions returns the defaults the flags start from.
func DefaultBootstrapOptions() BootstrapOptions {
	return BootstrapOptions{Namespace: "ray", GPUWorkers: 1}
}

// Validate checks the options. With a config file the identity and storage
// may come from it; without one the four are required.
func (o BootstrapOptions) Validate() error {
	var errs []error
	required := o.ConfigFile == ""
	check := func(flag, v string, validate func(string) error) {
		switch {
		case v != "":
			if err := validate(v); err != nil {
				errs = append(errs, err)
			}
		case required:
			errs = append(errs, fmt.Errorf("%s: required (or give --config-file)", flag))
		}
	}
	check("--account", o.Account, validateAccount)
	check("--container", o.Container, validateContainer)
	check("--client-id", o.ClientID, func(s string) error { return validateGUID("--client-id", s) })
	check("--tenant-id", o.TenantID, func(s string) error { return validateGUID("--tenant-id", s) })
	if err := validateDNSLabel("--namespace", o.Namespace); err != nil {
		errs = append(errs, err)
	}
	if o.GPUWorkers < 1 || o.GPUWorkers > 10000 {
		errs = append(errs, fmt.Errorf("--gpu-workers %d: must be between 1 and 10000", o.GPUWorkers))
	}
	return errors.Join(errs...)
}

func newBootstrapCmd(d *Deps) *cobra.Command {
	o := DefaultBootstrapOptions()
	cmd := &cobra.Command{
		Use:   "bootstrap --account NAME --container NAME --client-id GUID --tenant-id GUID [-o DIR]",
		Short: "Render Kubernetes manifests for a Ray cluster on AKS reading through blobfs",
		Long: `Render everything a Ray cluster on AKS needs to train from Blob Storage
through blobfs, authenticated by Azure workload identity, without
hand-written YAML: Namespace, ServiceAccount with the workload identity
annotation, StorageClass or static PV, ReadWriteMany PVCs for the dataset
(/mnt/data) and checkpoints (/mnt/checkpoints), a KubeRay RayCluster with a
GPU worker group that warms the dataset with 'blobfs prefetch' before
workers start, and an example RayJob.

For platform engineers setting up GPU training on AKS. blobfs only renders;
apply the output with kubectl. --print-az prints the az commands that
create what Kubernetes cannot (managed identity, federated credential, role
assignment); blobfs never runs them. A --config-file listing several
clusters in several regions renders one directory per cluster.

Output goes to stdout, or to files under -o DIR.

Status: flags are parsed and validated; rendering lands with issue #9.`,
		Example: `  # One cluster, straight to kubectl
  blobfs bootstrap --account mydata --container datasets \
      --client-id 11111111-2222-3333-4444-555555555555 \
      --tenant-id 66666666-7777-8888-9999-000000000000 \
      --gpu-workers 4 | kubectl apply -f -

  # Several regions from one config, one directory per cluster, plus the az commands
  blobfs bootstrap --config-file clusters.yaml -o deploy/out --print-az`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return usageError(err)
			}
			return runBootstrap(cmd.Context(), d, o)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.Account, "account", o.Account, "storage account `NAME` holding the data and checkpoints")
	f.StringVar(&o.Container, "container", o.Container, "container `NAME` to mount in the Ray pods")
	f.StringVar(&o.ClientID, "client-id", o.ClientID, "client ID (`GUID`) of the user-assigned managed identity the pods use")
	f.StringVar(&o.TenantID, "tenant-id", o.TenantID, "Entra ID tenant (`GUID`) of that identity")
	f.StringVar(&o.Namespace, "namespace", o.Namespace, "Kubernetes `NAMESPACE` for the Ray cluster")
	f.IntVar(&o.GPUWorkers, "gpu-workers", o.GPUWorkers, "number of GPU worker pods")
	f.StringVar(&o.ConfigFile, "config-file", o.ConfigFile, "read one or more clusters/regions from YAML `FILE`; flags override it")
	f.StringVarP(&o.OutputDir, "output-dir", "o", o.OutputDir, "write manifests under `DIR` instead of stdout")
	f.BoolVar(&o.PrintAz, "print-az", o.PrintAz, "also print the az CLI commands for identity, federated credential and role assignment")
	return cmd
}

// runBootstrap renders manifests. It is the seam issue #9 fills.
func runBootstrap(ctx context.Context, d *Deps, o BootstrapOptions) error {
	d.Logger.DebugContext(ctx, "bootstrap options valid",
		"account", o.Account, "container", o.Container, "namespace", o.Namespace, "gpu_workers", o.GPUWorkers)
	return notImplemented("bootstrap", issueBootstrap)
}
