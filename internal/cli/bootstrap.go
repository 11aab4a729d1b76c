package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blobfs/blobfs/internal/bootstrap"
)

// BootstrapOptions configures `blobfs bootstrap`. The fields mirror
// bootstrap.Settings; only flags the user gave (Given) override the config
// file, so a flag's default never masks a value from the file.
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
	Cluster    string // with a clusters list: render only this one

	ServiceAccount      string
	DatasetPrefix       string
	CheckpointContainer string
	CheckpointPrefix    string
	GPUsPerWorker       int
	Image               string // blobfs image of the prefetch init container
	RayImage            string
	RayVersion          string
	PrefetchPath        string
	PrefetchParallel    int
	Subscription        string
	ResourceGroup       string
	AKSCluster          string
	Region              string
	IdentityName        string

	// Given holds the names of the flags set on the command line.
	Given map[string]bool
}

// DefaultBootstrapOptions returns the defaults the flags start from: the
// bootstrap package's defaults.
func DefaultBootstrapOptions() BootstrapOptions {
	d := bootstrap.Defaults()
	return BootstrapOptions{
		Namespace: d.Namespace, GPUWorkers: d.GPUWorkers, ServiceAccount: d.ServiceAccount,
		CheckpointContainer: d.CheckpointContainer, GPUsPerWorker: d.GPUsPerWorker, Image: d.Image,
		RayImage: d.RayImage, RayVersion: d.RayVersion, PrefetchPath: d.PrefetchPath,
		PrefetchParallel: d.PrefetchParallel, IdentityName: d.IdentityName,
	}
}

// overrides returns the settings the given flags set. Without a config
// file every flag counts, defaults included (they equal the package's).
func (o BootstrapOptions) overrides() bootstrap.Settings {
	all := o.ConfigFile == ""
	var s bootstrap.Settings
	set := func(flag string, apply func()) {
		if all || o.Given[flag] {
			apply()
		}
	}
	set("account", func() { s.Account = o.Account })
	set("container", func() { s.Container = o.Container })
	set("client-id", func() { s.ClientID = o.ClientID })
	set("tenant-id", func() { s.TenantID = o.TenantID })
	set("namespace", func() { s.Namespace = o.Namespace })
	set("gpu-workers", func() { s.GPUWorkers = o.GPUWorkers })
	set("service-account", func() { s.ServiceAccount = o.ServiceAccount })
	set("dataset-prefix", func() { s.DatasetPrefix = o.DatasetPrefix })
	set("checkpoint-container", func() { s.CheckpointContainer = o.CheckpointContainer })
	set("checkpoint-prefix", func() { s.CheckpointPrefix = o.CheckpointPrefix })
	set("gpus-per-worker", func() { s.GPUsPerWorker = o.GPUsPerWorker })
	set("image", func() { s.Image = o.Image })
	set("ray-image", func() { s.RayImage = o.RayImage })
	set("ray-version", func() { s.RayVersion = o.RayVersion })
	set("prefetch-path", func() { s.PrefetchPath = o.PrefetchPath })
	set("prefetch-parallel", func() { s.PrefetchParallel = o.PrefetchParallel })
	set("subscription", func() { s.Subscription = o.Subscription })
	set("resource-group", func() { s.ResourceGroup = o.ResourceGroup })
	set("aks-cluster", func() { s.AKSCluster = o.AKSCluster })
	set("region", func() { s.Region = o.Region })
	set("identity-name", func() { s.IdentityName = o.IdentityName })
	return s
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
	if o.Cluster != "" && o.ConfigFile == "" {
		errs = append(errs, errors.New("--cluster picks one cluster of a --config-file with a clusters list"))
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
annotation, static PersistentVolumes and ReadWriteMany PVCs for the dataset
(/mnt/data) and checkpoints (/mnt/checkpoints), a KubeRay RayCluster with a
GPU worker group that warms the dataset with 'blobfs prefetch' before
workers start, and an example RayJob.

For platform engineers setting up GPU training on AKS. blobfs only renders;
apply the output with kubectl. --print-az prints the az commands that
create what Kubernetes cannot (managed identity, federated credential, role
assignment); blobfs never runs them. A --config-file listing several
clusters in several regions renders one directory per cluster.

Output goes to stdout as one multi-document YAML stream, or with -o DIR to
one file per object kind set (00-namespace.yaml, 10-storage.yaml,
20-raycluster.yaml, 30-rayjob.yaml), in DIR/NAME/ for each entry of a
config file's clusters list. Output is deterministic: render again and
diff. With --print-az the az commands go to stdout (instead of the YAML
when there is no -o); they need --resource-group and --aks-cluster.

Storage: two static PersistentVolumes of the CSI driver blobfs.csi.azure.io,
pre-bound to the claims 'dataset' (container [+ --dataset-prefix], mounted
read-only) and 'checkpoints' (--checkpoint-container [+ prefix]), mounted
with each pod's own workload identity token
(mountWithWorkloadIdentityToken). The driver's Helm chart must be
installed (deploy/helm/blobfs). See docs/aks.md for the whole walk-through.

Config file (YAML, unknown keys are errors): any of name, subscription,
resourceGroup, aksCluster, region, identityName, identityResourceGroup,
account, container, datasetPrefix, checkpointContainer, checkpointPrefix,
clientID, tenantID, namespace, serviceAccount, rayClusterName, rayImage,
rayVersion, gpuWorkers, gpusPerWorker, workerCPU, workerMemory, headCPU,
headMemory, shmSize, gpuNodeSelector, image, prefetchPath,
prefetchParallel at the top (shared), and a clusters list of entries with
the same keys overriding them per cluster.`,
		Example: `  # One cluster, straight to kubectl
  blobfs bootstrap --account mydata --container datasets \
      --client-id 11111111-2222-3333-4444-555555555555 \
      --tenant-id 66666666-7777-8888-9999-000000000000 \
      --gpu-workers 4 | kubectl apply -f -

  # The az commands for the identity, federated credential and roles
  blobfs bootstrap ... --resource-group ml-rg --aks-cluster ray-aks --print-az > az.sh

  # Several regions from one config, one directory per cluster, plus the az commands
  blobfs bootstrap --config-file clusters.yaml -o deploy/out --print-az > az.sh

  # One cluster of that config, straight to its kubectl context
  blobfs bootstrap --config-file clusters.yaml --cluster westeurope | kubectl apply -f -`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Given = map[string]bool{}
			cmd.Flags().Visit(func(f *pflag.Flag) { o.Given[f.Name] = true })
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
	f.BoolVar(&o.PrintAz, "print-az", o.PrintAz, "print the az CLI commands for identity, federated credential and role assignments (never run)")
	f.StringVar(&o.Cluster, "cluster", o.Cluster, "render only the cluster `NAME` of the config file's clusters list")
	f.StringVar(&o.ServiceAccount, "service-account", o.ServiceAccount, "`NAME` of the Ray pods' ServiceAccount (federated credential subject)")
	f.StringVar(&o.DatasetPrefix, "dataset-prefix", o.DatasetPrefix, "blob `PREFIX` of the dataset inside --container (default: the whole container)")
	f.StringVar(&o.CheckpointContainer, "checkpoint-container", o.CheckpointContainer, "container `NAME` for checkpoints (read-write)")
	f.StringVar(&o.CheckpointPrefix, "checkpoint-prefix", o.CheckpointPrefix, "blob `PREFIX` of the checkpoints inside --checkpoint-container")
	f.IntVar(&o.GPUsPerWorker, "gpus-per-worker", o.GPUsPerWorker, "nvidia.com/gpu per worker pod")
	f.StringVar(&o.Image, "image", o.Image, "blobfs `IMAGE` of the prefetch init container")
	f.StringVar(&o.RayImage, "ray-image", o.RayImage, "Ray `IMAGE` of the head and workers")
	f.StringVar(&o.RayVersion, "ray-version", o.RayVersion, "Ray `VERSION` in that image")
	f.StringVar(&o.PrefetchPath, "prefetch-path", o.PrefetchPath, "`PATH` under /mnt/data the workers warm before they start")
	f.IntVar(&o.PrefetchParallel, "prefetch-parallel", o.PrefetchParallel, "concurrent range fetches of the warm-up")
	f.StringVar(&o.Subscription, "subscription", o.Subscription, "Azure subscription `ID` for the az commands")
	f.StringVar(&o.ResourceGroup, "resource-group", o.ResourceGroup, "resource `GROUP` of the AKS cluster and the identity, for the az commands")
	f.StringVar(&o.AKSCluster, "aks-cluster", o.AKSCluster, "AKS cluster `NAME` for the az commands")
	f.StringVar(&o.Region, "region", o.Region, "Azure `REGION` of the identity for the az commands")
	f.StringVar(&o.IdentityName, "identity-name", o.IdentityName, "`NAME` of the user-assigned managed identity for the az commands")
	return cmd
}

// runBootstrap resolves the settings of each cluster and writes their
// manifests (stdout or -o DIR) and, with --print-az, the az commands.
func runBootstrap(ctx context.Context, d *Deps, o BootstrapOptions) error {
	var cfg *bootstrap.Config
	if o.ConfigFile != "" {
		data, err := os.ReadFile(o.ConfigFile)
		if err != nil {
			return fmt.Errorf("--config-file: %w", err)
		}
		if cfg, err = bootstrap.ParseConfig(data); err != nil {
			return usageErrorf("--config-file %s: %w", o.ConfigFile, err)
		}
	}
	clusters, err := bootstrap.Resolve(cfg, o.overrides())
	if err != nil {
		return usageError(err)
	}
	perCluster := cfg != nil && len(cfg.Clusters) > 0 // one directory per cluster
	if o.Cluster != "" {
		if !perCluster {
			return usageErrorf("--cluster %s: %s has no clusters list", o.Cluster, o.ConfigFile)
		}
		i := slices.IndexFunc(clusters, func(s bootstrap.Settings) bool { return s.Name == o.Cluster })
		if i < 0 {
			names := make([]string, len(clusters))
			for j, s := range clusters {
				names[j] = s.Name
			}
			return usageErrorf("--cluster %s: not in %s (it has %s)", o.Cluster, o.ConfigFile, strings.Join(names, ", "))
		}
		clusters = clusters[i : i+1]
	}
	var az string
	if o.PrintAz {
		if az, err = bootstrap.AzScript(clusters); err != nil {
			return usageError(err)
		}
	}

	if o.OutputDir == "" {
		if o.PrintAz {
			_, err := io.WriteString(d.Stdout, az)
			return err
		}
		if len(clusters) > 1 {
			return usageErrorf("%s lists %d clusters: give -o DIR (one directory each) or --cluster NAME", o.ConfigFile, len(clusters))
		}
		objs, err := bootstrap.Render(clusters[0])
		if err != nil {
			return err
		}
		return bootstrap.Marshal(d.Stdout, objs)
	}
	for _, s := range clusters {
		dir := o.OutputDir
		if perCluster {
			dir = filepath.Join(o.OutputDir, s.Name)
		}
		objs, err := bootstrap.Render(s)
		if err != nil {
			return err
		}
		files, err := bootstrap.WriteDir(dir, objs)
		if err != nil {
			return err
		}
		d.Logger.InfoContext(ctx, "rendered", "cluster", s.Name, "dir", dir, "files", len(files), "objects", len(objs))
	}
	if o.PrintAz {
		_, err := io.WriteString(d.Stdout, az)
		return err
	}
	return nil
}
