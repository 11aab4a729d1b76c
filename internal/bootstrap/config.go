// Package bootstrap renders the Kubernetes manifests (and the az commands
// for what Kubernetes cannot create) that a Ray cluster on AKS needs to
// train from Azure Blob Storage through the blobfs CSI driver with Azure
// workload identity: `blobfs bootstrap`.
//
// It only renders. Output is deterministic (sorted keys, fixed object
// order, no timestamps or versions of the renderer) so that rendered
// examples can be checked in and re-rendered in a test to catch drift.
//
// Settings come from package defaults, then a YAML config file (top-level
// settings, overridden per cluster by entries of its clusters list), then
// command-line flags. A config with a clusters list renders one directory
// per cluster: several AKS clusters in several regions pooling GPU quota,
// each with its region's storage account (or a shared one), its own
// workload identity federation (each cluster has its own OIDC issuer) and
// its own Ray cluster.
package bootstrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/blobfs/blobfs/csi"
)

// DefaultImage is the blobfs image the prefetch init container runs: the
// Helm chart's default (image.repository at the chart's appVersion).
// A test keeps the two equal.
const DefaultImage = "ghcr.io/blobfs/blobfs:0.1.0"

// Settings describe one cluster. Every field may be set at the top of the
// config file (shared by all clusters), in one entry of its clusters list,
// or by a flag; the zero value means "not set here".
type Settings struct {
	// Name names the cluster: its output directory and, unless AKSCluster
	// says otherwise, the AKS cluster in the az commands.
	Name string `yaml:"name"`

	// Azure side, used by the az commands (--print-az).
	Subscription          string `yaml:"subscription"`
	ResourceGroup         string `yaml:"resourceGroup"`
	AKSCluster            string `yaml:"aksCluster"`
	Region                string `yaml:"region"`
	IdentityName          string `yaml:"identityName"`
	IdentityResourceGroup string `yaml:"identityResourceGroup"`

	// Storage: the dataset (read-only in the pods) and the checkpoints.
	Account             string `yaml:"account"`
	Container           string `yaml:"container"`
	DatasetPrefix       string `yaml:"datasetPrefix"`
	CheckpointContainer string `yaml:"checkpointContainer"`
	CheckpointPrefix    string `yaml:"checkpointPrefix"`

	// Workload identity of the Ray pods.
	ClientID       string `yaml:"clientID"`
	TenantID       string `yaml:"tenantID"`
	Namespace      string `yaml:"namespace"`
	ServiceAccount string `yaml:"serviceAccount"`

	// Ray.
	RayClusterName string            `yaml:"rayClusterName"`
	RayImage       string            `yaml:"rayImage"`
	RayVersion     string            `yaml:"rayVersion"`
	GPUWorkers     int               `yaml:"gpuWorkers"`
	GPUsPerWorker  int               `yaml:"gpusPerWorker"`
	WorkerCPU      string            `yaml:"workerCPU"`
	WorkerMemory   string            `yaml:"workerMemory"`
	HeadCPU        string            `yaml:"headCPU"`
	HeadMemory     string            `yaml:"headMemory"`
	ShmSize        string            `yaml:"shmSize"`
	GPUNodeLabels  map[string]string `yaml:"gpuNodeSelector"`

	// blobfs.
	Image            string `yaml:"image"`
	PrefetchPath     string `yaml:"prefetchPath"`
	PrefetchParallel int    `yaml:"prefetchParallel"`
}

// Defaults returns the settings every cluster starts from.
func Defaults() Settings {
	return Settings{
		IdentityName:        "ray-blobfs",
		CheckpointContainer: "checkpoints",
		Namespace:           "ray",
		ServiceAccount:      "ray",
		RayClusterName:      "ray",
		RayImage:            "rayproject/ray:2.43.0-py311-gpu",
		RayVersion:          "2.43.0",
		GPUWorkers:          1,
		GPUsPerWorker:       1,
		WorkerCPU:           "8",
		WorkerMemory:        "64Gi",
		HeadCPU:             "4",
		HeadMemory:          "16Gi",
		ShmSize:             "8Gi",
		Image:               DefaultImage,
		PrefetchPath:        MountData,
		PrefetchParallel:    16,
	}
}

// Mount paths in the Ray pods.
const (
	MountData        = "/mnt/data"
	MountCheckpoints = "/mnt/checkpoints"
)

// Config is a --config-file: top-level settings shared by every cluster,
// and optionally a list of clusters overriding them.
type Config struct {
	Settings `yaml:",inline"`
	Clusters []Settings `yaml:"clusters"`
}

// ErrConfig marks a config file or settings problem the user must fix.
var ErrConfig = errors.New("invalid bootstrap configuration")

// ParseConfig decodes a config file strictly: unknown keys, duplicate
// keys, values of the wrong type and more than one YAML document are
// errors naming the line.
func ParseConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config file is empty: %w", ErrConfig)
		}
		return nil, fmt.Errorf("%s: %w", strings.TrimPrefix(err.Error(), "yaml: "), ErrConfig)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file holds more than one YAML document: %w", ErrConfig)
	}
	if err := explicitZeros(data); err != nil {
		return nil, err
	}
	if len(c.Clusters) > 0 && c.Name != "" {
		return nil, fmt.Errorf("name: set it in each entry of clusters, not at the top: %w", ErrConfig)
	}
	return &c, nil
}

// countKeys are the integer settings; zero means "not set" when merging,
// so an explicit 0 in the file would silently become the inherited value.
var countKeys = []string{"gpuWorkers", "gpusPerWorker", "prefetchParallel"}

// explicitZeros refuses countKeys written as 0.
func explicitZeros(data []byte) error {
	var raw struct {
		Top      map[string]any   `yaml:",inline"`
		Clusters []map[string]any `yaml:"clusters"`
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("%s: %w", err, ErrConfig)
	}
	var errs []error
	check := func(where string, m map[string]any) {
		for _, k := range countKeys {
			if v, ok := m[k]; ok && v == 0 {
				errs = append(errs, fmt.Errorf("%s%s: 0: must be at least 1: %w", where, k, ErrConfig))
			}
		}
	}
	check("", raw.Top)
	for i, c := range raw.Clusters {
		check(fmt.Sprintf("clusters[%d]: ", i), c)
	}
	return errors.Join(errs...)
}

// Resolve merges defaults, the config (nil: none) and overrides (the
// flags that were given) into the settings of each cluster, and validates
// them. Without a clusters list the result is one cluster.
func Resolve(c *Config, overrides Settings) ([]Settings, error) {
	top := Defaults()
	var entries []Settings
	if c != nil {
		top = Merge(top, c.Settings)
		entries = c.Clusters
	}
	if len(entries) == 0 {
		entries = []Settings{{}}
	}
	var (
		out  []Settings
		errs []error
		seen = map[string]bool{}
	)
	for i, e := range entries {
		s := Merge(Merge(top, e), overrides)
		where := ""
		if c != nil && len(c.Clusters) > 0 {
			where = fmt.Sprintf("clusters[%d] (%s): ", i, s.Name)
			if s.Name == "" {
				where = fmt.Sprintf("clusters[%d]: ", i)
			}
			if seen[s.Name] {
				errs = append(errs, fmt.Errorf("%sname %q appears twice: %w", where, s.Name, ErrConfig))
			}
			seen[s.Name] = true
		}
		if err := s.Validate(where != ""); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				errs = append(errs, fmt.Errorf("%s%s: %w", where, line, ErrConfig))
			}
		}
		out = append(out, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Merge returns base with every field that over sets (non-zero) replaced.
func Merge(base, over Settings) Settings {
	b := reflect.ValueOf(&base).Elem()
	o := reflect.ValueOf(over)
	for i := range o.NumField() {
		if f := o.Field(i); !f.IsZero() {
			b.Field(i).Set(f)
		}
	}
	return base
}

var (
	guidRE     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// Azure resource group names: letters, digits, '_', '-', '.', '(', ')'; not ending in '.'.
	resourceGroupRE = regexp.MustCompile(`^[-\w.()]{0,89}[-\w()]$`)
	// AKS cluster and managed identity names.
	azureNameRE = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_]{0,62}$`)
	regionRE    = regexp.MustCompile(`^[a-z0-9]{2,40}$`)
	// A container image reference, loosely: no spaces, a repository, and
	// a tag or digest is the user's business.
	imageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:@-]*[a-zA-Z0-9_.-]$`)
)

// Validate checks one cluster's merged settings. named says a cluster
// name is required (a config with a clusters list).
func (s Settings) Validate(named bool) error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	req := func(key, v string) bool {
		if v == "" {
			bad(key, "required")
			return false
		}
		return true
	}
	if named && req("name", s.Name) || s.Name != "" {
		if !dnsLabelRE.MatchString(s.Name) || len(s.Name) > 63 {
			bad("name", "%q: want a DNS label (lower-case letters, digits, '-')", s.Name)
		}
	}
	if req("account", s.Account) {
		if checkLocation(s.Account, "probe", "") != nil {
			bad("account", "%q: want 3-24 lower-case letters and digits", s.Account)
		}
	}
	for _, c := range []struct{ key, v string }{{"container", s.Container}, {"checkpointContainer", s.CheckpointContainer}} {
		if req(c.key, c.v) {
			if checkLocation("probe", c.v, "") != nil {
				bad(c.key, "%q: want 3-63 lower-case letters, digits and single hyphens", c.v)
			}
		}
	}
	for _, p := range []struct{ key, v string }{{"datasetPrefix", s.DatasetPrefix}, {"checkpointPrefix", s.CheckpointPrefix}} {
		if p.v == "" {
			continue
		}
		if checkLocation("probe", "probe", p.v) != nil || strings.HasSuffix(p.v, "/") {
			bad(p.key, "%q: want a blob name prefix like datasets/imagenet (no leading or trailing '/', no '.' or '..' segments)", p.v)
		}
	}
	if s.Container == s.CheckpointContainer && overlaps(s.DatasetPrefix, s.CheckpointPrefix) {
		bad("checkpointPrefix", "the checkpoints (%s/%s) must not lie inside the dataset (%s/%s) or contain it: the dataset is read-only in the pods and warmed whole by prefetch; use another container or disjoint prefixes",
			s.CheckpointContainer, s.CheckpointPrefix, s.Container, s.DatasetPrefix)
	}
	for _, g := range []struct{ key, v string }{{"clientID", s.ClientID}, {"tenantID", s.TenantID}} {
		if req(g.key, g.v) && !guidRE.MatchString(g.v) {
			bad(g.key, "%q: want a GUID like 00000000-0000-0000-0000-000000000000", g.v)
		}
	}
	if s.Subscription != "" && !guidRE.MatchString(s.Subscription) {
		bad("subscription", "%q: want a subscription id (GUID)", s.Subscription)
	}
	for _, n := range []struct{ key, v string }{{"namespace", s.Namespace}, {"serviceAccount", s.ServiceAccount}, {"rayClusterName", s.RayClusterName}} {
		if req(n.key, n.v) && (!dnsLabelRE.MatchString(n.v) || len(n.v) > 63) {
			bad(n.key, "%q: want a DNS label (lower-case letters, digits, '-', at most 63 characters)", n.v)
		}
	}
	if len(s.RayClusterName) > 40 {
		bad("rayClusterName", "%q: at most 40 characters (KubeRay derives longer pod and service names from it)", s.RayClusterName)
	}
	if s.ResourceGroup != "" && !resourceGroupRE.MatchString(s.ResourceGroup) {
		bad("resourceGroup", "%q: want letters, digits, '_', '-', '.', '(', ')', not ending in '.'", s.ResourceGroup)
	}
	if s.IdentityResourceGroup != "" && !resourceGroupRE.MatchString(s.IdentityResourceGroup) {
		bad("identityResourceGroup", "%q: want letters, digits, '_', '-', '.', '(', ')', not ending in '.'", s.IdentityResourceGroup)
	}
	for _, n := range []struct{ key, v string }{{"aksCluster", s.AKSCluster}, {"identityName", s.IdentityName}} {
		if n.v != "" && !azureNameRE.MatchString(n.v) {
			bad(n.key, "%q: want letters, digits, '-' and '_', starting with a letter or digit", n.v)
		}
	}
	if s.Region != "" && !regionRE.MatchString(s.Region) {
		bad("region", "%q: want an Azure region name like westeurope", s.Region)
	}
	for _, im := range []struct{ key, v string }{{"image", s.Image}, {"rayImage", s.RayImage}} {
		if req(im.key, im.v) && !imageRE.MatchString(im.v) {
			bad(im.key, "%q: want an image reference like registry/repository:tag", im.v)
		}
	}
	if req("rayVersion", s.RayVersion) && !regexp.MustCompile(`^\d+\.\d+(\.\d+)?$`).MatchString(s.RayVersion) {
		bad("rayVersion", "%q: want a Ray version like 2.43.0", s.RayVersion)
	}
	if s.GPUWorkers < 1 || s.GPUWorkers > 10000 {
		bad("gpuWorkers", "%d: must be between 1 and 10000", s.GPUWorkers)
	}
	if s.GPUsPerWorker < 1 || s.GPUsPerWorker > 16 {
		bad("gpusPerWorker", "%d: must be between 1 and 16", s.GPUsPerWorker)
	}
	for _, q := range []struct{ key, v string }{{"workerCPU", s.WorkerCPU}, {"workerMemory", s.WorkerMemory},
		{"headCPU", s.HeadCPU}, {"headMemory", s.HeadMemory}, {"shmSize", s.ShmSize}} {
		if req(q.key, q.v) {
			if qty, err := resource.ParseQuantity(q.v); err != nil || qty.Sign() <= 0 {
				bad(q.key, "%q: want a positive Kubernetes quantity like 8, 500m or 64Gi", q.v)
			}
		}
	}
	if shm, err := resource.ParseQuantity(s.ShmSize); err == nil {
		if mem, err := resource.ParseQuantity(s.WorkerMemory); err == nil && shm.Cmp(mem) > 0 {
			bad("shmSize", "%s is more than workerMemory %s: /dev/shm is memory and counts against the worker's limit", s.ShmSize, s.WorkerMemory)
		}
	}
	for k, v := range s.GPUNodeLabels {
		if k == "" || strings.ContainsAny(k+v, " \t\n") {
			bad("gpuNodeSelector", "%q: %q: want label keys and values without spaces", k, v)
		}
	}
	if req("prefetchPath", s.PrefetchPath) {
		if p := s.PrefetchPath; p != MountData && !strings.HasPrefix(p, MountData+"/") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
			bad("prefetchPath", "%q: must be %s or a path under it (the dataset mount)", p, MountData)
		}
	}
	if s.PrefetchParallel < 1 || s.PrefetchParallel > 1024 {
		bad("prefetchParallel", "%d: must be between 1 and 1024", s.PrefetchParallel)
	}
	return errors.Join(errs...)
}

// checkLocation validates an account, container and prefix the way the
// CSI driver will when it parses the volume handle rendered from them.
func checkLocation(account, container, prefix string) error {
	id := csi.VolumeID{Account: account, Container: container, Prefix: prefix}
	got, err := csi.ParseVolumeID(id.String())
	if err != nil {
		return err
	}
	if got != id {
		return fmt.Errorf("%q does not survive the volume id round trip: %w", prefix, ErrConfig)
	}
	return nil
}

// overlaps reports whether one blob prefix contains the other ("" contains
// everything).
func overlaps(a, b string) bool {
	if a == "" || b == "" || a == b {
		return true
	}
	return strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// FederatedSubject is the subject of the federated credential the pods'
// identity needs: their service account.
func (s Settings) FederatedSubject() string {
	return "system:serviceaccount:" + s.Namespace + ":" + s.ServiceAccount
}

// aksCluster is the AKS cluster name the az commands use.
func (s Settings) aksCluster() string {
	if s.AKSCluster != "" {
		return s.AKSCluster
	}
	return s.Name
}

// identityResourceGroup is the resource group of the managed identity.
func (s Settings) identityResourceGroup() string {
	if s.IdentityResourceGroup != "" {
		return s.IdentityResourceGroup
	}
	return s.ResourceGroup
}
