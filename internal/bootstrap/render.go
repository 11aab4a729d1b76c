package bootstrap

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/blobfs/blobfs/csi"
)

// Labels and annotations the AKS workload identity webhook reads.
const (
	LabelWorkloadIdentityUse      = "azure.workload.identity/use"
	AnnotationWorkloadIdentityID  = "azure.workload.identity/client-id"
	AnnotationWorkloadIdentityTen = "azure.workload.identity/tenant-id"
	// TokenAudience is the audience of the service account tokens Entra
	// ID accepts for a federated credential.
	TokenAudience = "api://AzureADTokenExchange"
)

// Names of what Render creates inside the namespace.
const (
	ClaimDataset      = "dataset"
	ClaimCheckpoints  = "checkpoints"
	VolumeShm         = "dshm"
	VolumeExample     = "train-example"
	ExampleConfigMap  = "ray-train-example"
	ExampleJob        = "train-example"
	ExampleMountPath  = "/opt/blobfs-example"
	PrefetchContainer = "blobfs-prefetch"
	WorkerGroup       = "gpu"
	// RayUID and RayGID are the user the rayproject/ray images run as
	// (ray, uid 1000, group users 100).
	RayUID = 1000
	RayGID = 100
)

// Output files of one cluster with -o, in the order kubectl applies a
// directory (lexical): the namespace before what lives in it.
const (
	FileNamespace  = "00-namespace.yaml"
	FileStorage    = "10-storage.yaml"
	FileRayCluster = "20-raycluster.yaml"
	FileRayJob     = "30-rayjob.yaml"
)

// Header starts every rendered file and stream.
const Header = "# Rendered by `blobfs bootstrap`. Change its flags or config file and\n# render again rather than editing this output.\n"

//go:embed train.py
var trainScript string

// Object is one rendered Kubernetes object.
type Object struct {
	// File is the -o file it goes to (FileNamespace, ...).
	File       string
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
	// Doc is the object as JSON-compatible maps, what is marshalled.
	Doc map[string]any
}

// Render returns the objects of one cluster in apply order: Namespace,
// ServiceAccount, PersistentVolumes, PersistentVolumeClaims, ConfigMap,
// RayCluster, RayJob.
func Render(s Settings) ([]Object, error) {
	if err := s.Validate(false); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	r := renderer{s: s}
	var objs []Object
	for _, step := range []func() (Object, error){
		r.namespace, r.serviceAccount,
		r.datasetPV, r.checkpointsPV, r.datasetPVC, r.checkpointsPVC,
		r.exampleConfigMap, r.rayCluster, r.rayJob,
	} {
		o, err := step()
		if err != nil {
			return nil, err
		}
		objs = append(objs, o)
	}
	return objs, nil
}

type renderer struct{ s Settings }

func (r renderer) labels() map[string]string {
	return map[string]string{
		"app.kubernetes.io/part-of":    "ray-on-blobfs",
		"app.kubernetes.io/managed-by": "blobfs-bootstrap",
	}
}

func (r renderer) meta(name string, namespaced bool) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Labels: r.labels()}
	if namespaced {
		m.Namespace = r.s.Namespace
	}
	return m
}

// object turns a typed object into an Object, dropping the empty status
// and null fields encoding/json writes for unset structs.
func (r renderer) object(file string, typed any) (Object, error) {
	doc, err := toMap(typed)
	if err != nil {
		return Object{}, err
	}
	return r.objectMap(file, doc), nil
}

func (r renderer) objectMap(file string, doc map[string]any) Object {
	delete(doc, "status")
	if spec, ok := doc["spec"].(map[string]any); ok && len(spec) == 0 {
		delete(doc, "spec") // a Namespace's
	}
	md, _ := doc["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	apiVersion, _ := doc["apiVersion"].(string)
	kind, _ := doc["kind"].(string)
	return Object{File: file, APIVersion: apiVersion, Kind: kind, Namespace: ns, Name: name, Doc: doc}
}

// toMap converts a typed object to maps through JSON and prunes nulls.
func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: encoding %T: %w", v, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("bootstrap: decoding %T: %w", v, err)
	}
	prune(m)
	return m, nil
}

// prune removes null values, which typed structs emit for unset times
// (creationTimestamp) and which no rendered field means.
func prune(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if e == nil {
				delete(t, k)
				continue
			}
			prune(e)
		}
	case []any:
		for _, e := range t {
			prune(e)
		}
	}
}

func (r renderer) namespace() (Object, error) {
	return r.object(FileNamespace, &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: r.meta(r.s.Namespace, false),
	})
}

func (r renderer) serviceAccount() (Object, error) {
	m := r.meta(r.s.ServiceAccount, true)
	m.Annotations = map[string]string{
		AnnotationWorkloadIdentityID:  r.s.ClientID,
		AnnotationWorkloadIdentityTen: r.s.TenantID,
	}
	return r.object(FileNamespace, &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: m,
	})
}

// PVName returns the name of the PersistentVolume behind a claim.
// PersistentVolumes are cluster-wide, so the name carries the namespace.
func (s Settings) PVName(claim string) string {
	return "blobfs-" + s.Namespace + "-" + claim
}

// VolumeHandle returns the CSI volume handle of a claim's static PV.
func (s Settings) VolumeHandle(claim string) string {
	if claim == ClaimDataset {
		return csi.VolumeID{Account: s.Account, Container: s.Container, Prefix: s.DatasetPrefix}.String()
	}
	return csi.VolumeID{Account: s.Account, Container: s.CheckpointContainer, Prefix: s.CheckpointPrefix}.String()
}

// VolumeAttributes returns the CSI volume attributes of a claim's static
// PV: where the data is, and per-pod workload identity, so each pod's
// mount authenticates with its own service account's token exchanged for
// the identity's, never a stored secret.
func (s Settings) VolumeAttributes(claim string) map[string]string {
	a := map[string]string{
		csi.AttrStorageAccount:         s.Account,
		csi.AttrContainerName:          s.Container,
		csi.AttrProtocol:               "fuse2",
		csi.AttrWorkloadIdentityTokens: "true",
		csi.AttrClientID:               s.ClientID,
		csi.AttrTenantID:               s.TenantID,
	}
	prefix := s.DatasetPrefix
	if claim == ClaimCheckpoints {
		a[csi.AttrContainerName] = s.CheckpointContainer
		prefix = s.CheckpointPrefix
	}
	if prefix != "" {
		a[csi.AttrSubDir] = prefix
	}
	return a
}

// claimSize is informational: blob containers have no size, but PVs and
// PVCs must state one.
var claimSize = resource.MustParse("1Ti")

func (r renderer) pv(claim string) (Object, error) {
	return r.object(FileStorage, &corev1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: r.meta(r.s.PVName(claim), false),
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: claimSize},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			// The data was there before this PV and stays after it.
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			// Pre-bound both ways: no other claim can take it, and the
			// claim cannot bind anything else.
			ClaimRef: &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: r.s.Namespace, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:           csi.DriverName,
				VolumeHandle:     r.s.VolumeHandle(claim),
				VolumeAttributes: r.s.VolumeAttributes(claim),
			}},
			MountOptions: mountOptions(claim),
		},
	})
}

// mountOptions are a claim's blobfs mount flags. The dataset is read
// through FUSE passthrough once cached (the second epoch at local-disk
// speed, without the daemon): its volume is ReadWriteMany so data can be
// added, and passthrough's "auto" only covers read-only mounts. The cost,
// opening a dataset file for writing while a job reads it fails with
// ETXTBSY, suits a dataset; checkpoints keep the default.
func mountOptions(claim string) []string {
	if claim == ClaimDataset {
		return []string{"--passthrough=on"}
	}
	return nil
}

func (r renderer) datasetPV() (Object, error)     { return r.pv(ClaimDataset) }
func (r renderer) checkpointsPV() (Object, error) { return r.pv(ClaimCheckpoints) }

func (r renderer) pvc(claim string) (Object, error) {
	noClass := "" // static binding: never the cluster's default StorageClass
	return r.object(FileStorage, &corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: r.meta(claim, true),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			StorageClassName: &noClass,
			VolumeName:       r.s.PVName(claim),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: claimSize}},
		},
	})
}

func (r renderer) datasetPVC() (Object, error)     { return r.pvc(ClaimDataset) }
func (r renderer) checkpointsPVC() (Object, error) { return r.pvc(ClaimCheckpoints) }

func (r renderer) exampleConfigMap() (Object, error) {
	return r.object(FileRayCluster, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: r.meta(ExampleConfigMap, true),
		Data:       map[string]string{"train.py": trainScript},
	})
}

// podLabels are the Ray pods' labels: the workload identity webhook
// injects AZURE_* variables and a token into labelled pods, so code in
// the pods can use the same identity as the mounts.
func (r renderer) podLabels() map[string]string {
	l := r.labels()
	l[LabelWorkloadIdentityUse] = "true"
	return l
}

func (r renderer) podSecurity() *corev1.PodSecurityContext {
	uid, gid := int64(RayUID), int64(RayGID)
	nonRoot := true
	// fsGroup reaches the blobfs mounts as their group (CSIDriver
	// fsGroupPolicy: File), so uid 1000 can write checkpoints without a
	// chown of every blob.
	return &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &gid, RunAsNonRoot: &nonRoot}
}

// blobfsMounts are the volume mounts of the two claims. HostToContainer
// propagation lets a mount the driver repairs reach a running pod.
func blobfsMounts() []corev1.VolumeMount {
	prop := corev1.MountPropagationHostToContainer
	return []corev1.VolumeMount{
		{Name: ClaimDataset, MountPath: MountData, ReadOnly: true, MountPropagation: &prop},
		{Name: ClaimCheckpoints, MountPath: MountCheckpoints, MountPropagation: &prop},
	}
}

// volumes are a pod's volumes. The dataset is published read-only to the
// whole pod: every container, the prefetch init container included,
// only reads it.
func (r renderer) volumes(withExample bool) []corev1.Volume {
	shm := resource.MustParse(r.s.ShmSize)
	if withExample { // the head: /dev/shm counts against its smaller memory limit
		if mem := resource.MustParse(r.s.HeadMemory); mem.Cmp(shm) < 0 {
			shm = mem
		}
	}
	v := []corev1.Volume{
		{Name: ClaimDataset, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: ClaimDataset, ReadOnly: true}}},
		{Name: ClaimCheckpoints, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: ClaimCheckpoints}}},
		// Ray's object store lives in /dev/shm; the container default is 64 MiB.
		{Name: VolumeShm, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &shm}}},
	}
	if withExample {
		v = append(v, corev1.Volume{Name: VolumeExample, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ExampleConfigMap}}}})
	}
	return v
}

// PrefetchCommand is the init container's command: warm the node cache
// with the dataset through the mount, so workers start on cached data.
func (s Settings) PrefetchCommand() []string {
	return []string{"/blobfs", "prefetch", "--parallel", strconv.Itoa(s.PrefetchParallel), s.PrefetchPath}
}

func (r renderer) headTemplate() corev1.PodTemplateSpec {
	mounts := append(blobfsMounts(),
		corev1.VolumeMount{Name: VolumeShm, MountPath: "/dev/shm"},
		corev1.VolumeMount{Name: VolumeExample, MountPath: ExampleMountPath, ReadOnly: true})
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: r.podLabels()},
		Spec: corev1.PodSpec{
			ServiceAccountName: r.s.ServiceAccount,
			SecurityContext:    r.podSecurity(),
			Containers: []corev1.Container{{
				Name:  "ray-head",
				Image: r.s.RayImage,
				Ports: []corev1.ContainerPort{
					{Name: "gcs", ContainerPort: 6379},
					{Name: "dashboard", ContainerPort: 8265},
					{Name: "client", ContainerPort: 10001},
					{Name: "metrics", ContainerPort: 8080},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(r.s.HeadCPU), corev1.ResourceMemory: resource.MustParse(r.s.HeadMemory)},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(r.s.HeadMemory)},
				},
				VolumeMounts: mounts,
			}},
			Volumes: r.volumes(true),
		},
	}
}

// gpuTolerations let workers onto AKS GPU pools, which are tainted with
// one of these depending on how they were created.
func gpuTolerations() []corev1.Toleration {
	return []corev1.Toleration{
		{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: "sku", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule},
	}
}

// ResourceGPU is the extended resource the NVIDIA device plugin serves.
const ResourceGPU corev1.ResourceName = "nvidia.com/gpu"

func (r renderer) workerTemplate() corev1.PodTemplateSpec {
	gpus := *resource.NewQuantity(int64(r.s.GPUsPerWorker), resource.DecimalSI)
	prop := corev1.MountPropagationHostToContainer
	noEscalation, readOnlyRoot := false, true
	mounts := append(blobfsMounts(), corev1.VolumeMount{Name: VolumeShm, MountPath: "/dev/shm"})
	var selector map[string]string
	if len(r.s.GPUNodeLabels) > 0 {
		selector = r.s.GPUNodeLabels
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: r.podLabels()},
		Spec: corev1.PodSpec{
			ServiceAccountName: r.s.ServiceAccount,
			SecurityContext:    r.podSecurity(),
			NodeSelector:       selector,
			Tolerations:        gpuTolerations(),
			// Init containers run to completion before the Ray container
			// starts: the worker joins the cluster with the dataset in the
			// node cache. The mount is the same CSI volume the worker uses
			// (one FUSE mount per node and identity), so prefetch fills
			// exactly the cache the training reads hit.
			//
			// prefetch drives the mount through its control file
			// (/mnt/data/.blobfs-control), opened read-only with the
			// request sent by ioctl, which a read-only mount allows; so
			// this container, like the Ray container and the pod's
			// volume, has the dataset read-only (and the identity holds
			// only Storage Blob Data Reader on its container).
			InitContainers: []corev1.Container{{
				Name:    PrefetchContainer,
				Image:   r.s.Image,
				Command: r.s.PrefetchCommand(),
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: ClaimDataset, MountPath: MountData, ReadOnly: true, MountPropagation: &prop}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &noEscalation,
					ReadOnlyRootFilesystem:   &readOnlyRoot,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
			Containers: []corev1.Container{{
				Name:  "ray-worker",
				Image: r.s.RayImage,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{
						corev1.ResourceCPU:    resource.MustParse(r.s.WorkerCPU),
						corev1.ResourceMemory: resource.MustParse(r.s.WorkerMemory),
						ResourceGPU:           gpus,
					},
					Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(r.s.WorkerMemory), ResourceGPU: gpus},
				},
				VolumeMounts: mounts,
			}},
			Volumes: r.volumes(false),
		},
	}
}

func (r renderer) rayCluster() (Object, error) {
	head, err := toMap(r.headTemplate())
	if err != nil {
		return Object{}, err
	}
	worker, err := toMap(r.workerTemplate())
	if err != nil {
		return Object{}, err
	}
	md, err := toMap(r.meta(r.s.RayClusterName, true))
	if err != nil {
		return Object{}, err
	}
	n := r.s.GPUWorkers
	return r.objectMap(FileRayCluster, map[string]any{
		"apiVersion": "ray.io/v1",
		"kind":       "RayCluster",
		"metadata":   md,
		"spec": map[string]any{
			"rayVersion":              r.s.RayVersion,
			"enableInTreeAutoscaling": false,
			"headGroupSpec": map[string]any{
				"serviceType": "ClusterIP",
				// num-cpus 0: no tasks or actors on the head; it runs the
				// GCS, the dashboard and job drivers.
				"rayStartParams": map[string]any{"dashboard-host": "0.0.0.0", "num-cpus": "0"},
				"template":       head,
			},
			"workerGroupSpecs": []any{map[string]any{
				"groupName":      WorkerGroup,
				"replicas":       n,
				"minReplicas":    n,
				"maxReplicas":    n,
				"rayStartParams": map[string]any{},
				"template":       worker,
			}},
		},
	}), nil
}

// TrainEntrypoint is the example RayJob's entrypoint, run on the head.
func (s Settings) TrainEntrypoint() string {
	return fmt.Sprintf("python %s/train.py --data %s --storage %s --name %s --workers %d --gpus-per-worker %d",
		ExampleMountPath, MountData, MountCheckpoints, ExampleJob, s.GPUWorkers, s.GPUsPerWorker)
}

func (r renderer) rayJob() (Object, error) {
	md, err := toMap(r.meta(ExampleJob, true))
	if err != nil {
		return Object{}, err
	}
	return r.objectMap(FileRayJob, map[string]any{
		"apiVersion": "ray.io/v1",
		"kind":       "RayJob",
		"metadata":   md,
		"spec": map[string]any{
			// Submit to the RayCluster above instead of creating one.
			"clusterSelector": map[string]any{"ray.io/cluster": r.s.RayClusterName},
			"submissionMode":  "K8sJobMode",
			"entrypoint":      r.s.TrainEntrypoint(),
		},
	}), nil
}

// Marshal writes objects as one multi-document YAML stream, after Header.
func Marshal(w io.Writer, objs []Object) error {
	var b bytes.Buffer
	b.WriteString(Header)
	for _, o := range objs {
		b.WriteString("---\n")
		// yaml.v3 sorts map keys and, unlike yaml.v2, never folds long
		// lines (an entrypoint stays one line).
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(o.Doc); err != nil {
			return fmt.Errorf("bootstrap: %s %s: %w", o.Kind, o.Name, err)
		}
		if err := enc.Close(); err != nil {
			return fmt.Errorf("bootstrap: %s %s: %w", o.Kind, o.Name, err)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Files groups objects by output file: file name → YAML stream.
func Files(objs []Object) (map[string][]byte, error) {
	byFile := map[string][]Object{}
	var order []string
	for _, o := range objs {
		if _, ok := byFile[o.File]; !ok {
			order = append(order, o.File)
		}
		byFile[o.File] = append(byFile[o.File], o)
	}
	out := make(map[string][]byte, len(order))
	for _, f := range order {
		var b bytes.Buffer
		if err := Marshal(&b, byFile[f]); err != nil {
			return nil, err
		}
		out[f] = b.Bytes()
	}
	return out, nil
}

// WriteDir writes objects into dir, one file per object kind set
// (FileNamespace, FileStorage, ...). It creates dir and overwrites those
// files; it deletes nothing.
func WriteDir(dir string, objs []Object) ([]string, error) {
	files, err := Files(objs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	var written []string
	for _, name := range names {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return written, fmt.Errorf("bootstrap: %w", err)
		}
		written = append(written, p)
	}
	return written, nil
}
