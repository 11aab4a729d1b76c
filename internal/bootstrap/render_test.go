package bootstrap

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/blobfs/blobfs/csi"
	"github.com/blobfs/blobfs/internal/bootstrap/crdschema"
)

const (
	testClient = "11111111-2222-3333-4444-555555555555"
	testTenant = "66666666-7777-8888-9999-000000000000"
)

func testSettings() Settings {
	s := Defaults()
	s.Account, s.Container, s.ClientID, s.TenantID = "mydata", "datasets", testClient, testTenant
	return s
}

var (
	crdOnce sync.Once
	crds    map[string]*crdschema.CRD
	crdErr  error
)

// kuberayCRDs loads the checked-in KubeRay CRDs (testdata/kuberay).
func kuberayCRDs(t *testing.T) map[string]*crdschema.CRD {
	t.Helper()
	crdOnce.Do(func() {
		crds = map[string]*crdschema.CRD{}
		for kind, f := range map[string]string{"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"} {
			b, err := os.ReadFile("testdata/kuberay/" + f)
			if err != nil {
				crdErr = err
				return
			}
			if crds[kind], err = crdschema.LoadCRD(b, "v1"); err != nil {
				crdErr = err
				return
			}
		}
	})
	if crdErr != nil {
		t.Fatal(crdErr)
	}
	return crds
}

// docs splits a multi-document YAML stream, dropping comment-only parts.
func docs(stream []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(stream, []byte("\n---\n")) {
		d = bytes.TrimPrefix(d, []byte("---\n"))
		if len(bytes.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAll(d, nil))) == 0 {
			continue
		}
		out = append(out, d)
	}
	return out
}

// decoded is one cluster's rendered objects, each decoded strictly into
// its k8s.io/api type, or for KubeRay objects validated against the CRD.
type decoded struct {
	ns           *corev1.Namespace
	sa           *corev1.ServiceAccount
	pvs          map[string]*corev1.PersistentVolume
	pvcs         map[string]*corev1.PersistentVolumeClaim
	configMaps   map[string]*corev1.ConfigMap
	head         corev1.PodTemplateSpec
	workers      corev1.PodTemplateSpec
	rayCluster   map[string]any
	rayJob       map[string]any
	kindsInOrder []string
}

// decodeStream strictly decodes every document of a rendered stream: core
// objects with k8s.io/api types (unknown fields and wrong types fail),
// RayCluster and RayJob against KubeRay's CRD schemas, and their pod
// templates again with k8s.io/api types. Names must be valid Kubernetes
// names.
func decodeStream(t *testing.T, stream []byte) *decoded {
	t.Helper()
	d := &decoded{pvs: map[string]*corev1.PersistentVolume{}, pvcs: map[string]*corev1.PersistentVolumeClaim{}, configMaps: map[string]*corev1.ConfigMap{}}
	for i, doc := range docs(stream) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		d.kindsInOrder = append(d.kindsInOrder, head.Kind)
		if errs := validation.IsDNS1123Subdomain(head.Metadata.Name); len(errs) > 0 {
			t.Errorf("%s %q: bad name: %v", head.Kind, head.Metadata.Name, errs)
		}
		strict := func(into any) {
			t.Helper()
			if err := yaml.UnmarshalStrict(doc, into); err != nil {
				t.Fatalf("%s %s does not decode strictly into %T: %v\n%s", head.Kind, head.Metadata.Name, into, err, doc)
			}
		}
		key := head.APIVersion + "/" + head.Kind
		switch key {
		case "v1/Namespace":
			d.ns = new(corev1.Namespace)
			strict(d.ns)
		case "v1/ServiceAccount":
			d.sa = new(corev1.ServiceAccount)
			strict(d.sa)
		case "v1/PersistentVolume":
			pv := new(corev1.PersistentVolume)
			strict(pv)
			d.pvs[pv.Name] = pv
		case "v1/PersistentVolumeClaim":
			pvc := new(corev1.PersistentVolumeClaim)
			strict(pvc)
			d.pvcs[pvc.Name] = pvc
		case "v1/ConfigMap":
			cm := new(corev1.ConfigMap)
			strict(cm)
			d.configMaps[cm.Name] = cm
		case "storage.k8s.io/v1/StorageClass":
			strict(new(storagev1.StorageClass))
		case "ray.io/v1/RayCluster", "ray.io/v1/RayJob":
			if err := kuberayCRDs(t)[head.Kind].ValidateYAML(doc); err != nil {
				t.Fatalf("%s %s fails KubeRay's CRD schema:\n%v", head.Kind, head.Metadata.Name, err)
			}
			var m map[string]any
			if err := yaml.Unmarshal(doc, &m); err != nil {
				t.Fatal(err)
			}
			if head.Kind == "RayJob" {
				d.rayJob = m
				continue
			}
			d.rayCluster = m
			var rc struct {
				Spec struct {
					HeadGroupSpec struct {
						Template any `json:"template"`
					} `json:"headGroupSpec"`
					WorkerGroupSpecs []struct {
						Template any `json:"template"`
					} `json:"workerGroupSpecs"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal(doc, &rc); err != nil {
				t.Fatal(err)
			}
			decodeTemplate(t, "head", rc.Spec.HeadGroupSpec.Template, &d.head)
			if len(rc.Spec.WorkerGroupSpecs) != 1 {
				t.Fatalf("%d worker groups, want 1", len(rc.Spec.WorkerGroupSpecs))
			}
			decodeTemplate(t, "worker", rc.Spec.WorkerGroupSpecs[0].Template, &d.workers)
		default:
			t.Fatalf("unexpected object %s %s", key, head.Metadata.Name)
		}
	}
	return d
}

func decodeTemplate(t *testing.T, what string, tmpl any, into *corev1.PodTemplateSpec) {
	t.Helper()
	b, err := yaml.Marshal(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s pod template does not decode strictly into corev1.PodTemplateSpec: %v", what, err)
	}
}

func render(t *testing.T, s Settings) []byte {
	t.Helper()
	objs, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Marshal(&b, objs); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestRenderDecodesStrictly: every object of several clusters' renders
// decodes strictly (core types) or passes KubeRay's schemas, in apply
// order.
func TestRenderDecodesStrictly(t *testing.T) {
	variants := map[string]func(*Settings){
		"defaults": func(*Settings) {},
		"prefixes and selectors": func(s *Settings) {
			s.DatasetPrefix, s.CheckpointContainer, s.CheckpointPrefix = "imagenet/train", "datasets", "runs/ckpt"
			s.GPUNodeLabels = map[string]string{"agentpool": "gpu", "kubernetes.azure.com/accelerator": "nvidia"}
			s.GPUWorkers, s.GPUsPerWorker, s.Namespace, s.ServiceAccount = 16, 8, "ml-team", "trainer"
			s.WorkerCPU, s.WorkerMemory, s.ShmSize = "90", "1800Gi", "200Gi"
			s.PrefetchPath, s.PrefetchParallel = "/mnt/data/train", 64
		},
	}
	for name, mutate := range variants {
		t.Run(name, func(t *testing.T) {
			s := testSettings()
			mutate(&s)
			d := decodeStream(t, render(t, s))
			want := []string{"Namespace", "ServiceAccount", "PersistentVolume", "PersistentVolume",
				"PersistentVolumeClaim", "PersistentVolumeClaim", "ConfigMap", "RayCluster", "RayJob"}
			if !slices.Equal(d.kindsInOrder, want) {
				t.Errorf("objects %v, want %v (namespace first, claims before the pods using them)", d.kindsInOrder, want)
			}
			checkWiring(t, s, d)
		})
	}
}

// checkWiring checks what no schema sees: the names that must agree
// across objects.
func checkWiring(t *testing.T, s Settings, d *decoded) {
	t.Helper()
	// Identity: service account ↔ annotation ↔ the mounts' client id.
	if d.ns == nil || d.ns.Name != s.Namespace {
		t.Fatalf("namespace object %v, want %s", d.ns, s.Namespace)
	}
	if d.sa == nil || d.sa.Name != s.ServiceAccount || d.sa.Namespace != s.Namespace {
		t.Fatalf("service account %v, want %s/%s", d.sa, s.Namespace, s.ServiceAccount)
	}
	if got := d.sa.Annotations[AnnotationWorkloadIdentityID]; got != s.ClientID {
		t.Errorf("service account client-id annotation %q, want %q", got, s.ClientID)
	}
	if got := d.sa.Annotations[AnnotationWorkloadIdentityTen]; got != s.TenantID {
		t.Errorf("service account tenant-id annotation %q, want %q", got, s.TenantID)
	}
	if got, want := s.FederatedSubject(), "system:serviceaccount:"+d.sa.Namespace+":"+d.sa.Name; got != want {
		t.Errorf("federated subject %q, want %q", got, want)
	}

	// Storage: PVC ↔ PV ↔ CSI volume, for both claims.
	wantMount := map[string]struct {
		container, prefix, path string
		readOnly                bool
	}{
		ClaimDataset:     {s.Container, s.DatasetPrefix, MountData, true},
		ClaimCheckpoints: {s.CheckpointContainer, s.CheckpointPrefix, MountCheckpoints, false},
	}
	for claim, w := range wantMount {
		pvc := d.pvcs[claim]
		if pvc == nil {
			t.Fatalf("no PVC %s", claim)
		}
		if pvc.Namespace != s.Namespace || !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}) ||
			pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "" {
			t.Errorf("PVC %s: namespace %s, access %v, class %v; want %s, RWX, \"\" (static)", claim, pvc.Namespace, pvc.Spec.AccessModes, pvc.Spec.StorageClassName, s.Namespace)
		}
		pv := d.pvs[pvc.Spec.VolumeName]
		if pv == nil {
			t.Fatalf("PVC %s names PV %q, which is not rendered", claim, pvc.Spec.VolumeName)
		}
		if ref := pv.Spec.ClaimRef; ref == nil || ref.Name != claim || ref.Namespace != s.Namespace {
			t.Errorf("PV %s claimRef %v, want %s/%s", pv.Name, ref, s.Namespace, claim)
		}
		if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
			t.Errorf("PV %s reclaim policy %s: the data outlives the PV", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
		}
		c := pv.Spec.CSI
		if c == nil || c.Driver != csi.DriverName {
			t.Fatalf("PV %s: CSI %v, want driver %s", pv.Name, c, csi.DriverName)
		}
		id, err := csi.ParseVolumeID(c.VolumeHandle)
		if err != nil {
			t.Fatalf("PV %s volume handle: %v", pv.Name, err)
		}
		if id.Account != s.Account || id.Container != w.container || id.Prefix != w.prefix || id.Owned {
			t.Errorf("PV %s handle %+v, want %s/%s/%s, not owned", pv.Name, id, s.Account, w.container, w.prefix)
		}
		a := c.VolumeAttributes
		if a[csi.AttrWorkloadIdentityTokens] != "true" || a[csi.AttrClientID] != d.sa.Annotations[AnnotationWorkloadIdentityID] || a[csi.AttrTenantID] != s.TenantID {
			t.Errorf("PV %s attributes %v: want per-pod workload identity with the service account's client id", pv.Name, a)
		}
		// The Ray containers mount the dataset read-only, and both pods
		// publish it read-only (the workers' prefetch init container
		// needs no write: it sends its request by ioctl).
		checkPodMount(t, d.head, claim, w.path, w.readOnly, w.readOnly)
		checkPodMount(t, d.workers, claim, w.path, w.readOnly, w.readOnly)
	}

	// Pods: identity, user, /dev/shm, GPUs.
	for what, tmpl := range map[string]corev1.PodTemplateSpec{"head": d.head, "worker": d.workers} {
		ps := tmpl.Spec
		if ps.ServiceAccountName != d.sa.Name {
			t.Errorf("%s pods run as service account %q, want %q", what, ps.ServiceAccountName, d.sa.Name)
		}
		if tmpl.Labels[LabelWorkloadIdentityUse] != "true" {
			t.Errorf("%s pods lack the label %s=true", what, LabelWorkloadIdentityUse)
		}
		if sc := ps.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != RayUID || sc.FSGroup == nil {
			t.Errorf("%s pod security context %v: want uid %d and an fsGroup", what, sc, RayUID)
		}
		if m := findMount(ps.Containers[0], "/dev/shm"); m == nil || volume(ps, m.Name).EmptyDir == nil || volume(ps, m.Name).EmptyDir.Medium != corev1.StorageMediumMemory {
			t.Errorf("%s: /dev/shm is not a memory emptyDir", what)
		}
		if r := ps.Containers[0].Resources.Requests; r.Cpu().IsZero() || r.Memory().IsZero() {
			t.Errorf("%s: no cpu/memory requests: %v", what, r)
		}
		if shm, mem := volume(ps, VolumeShm).EmptyDir.SizeLimit, ps.Containers[0].Resources.Limits.Memory(); shm == nil || shm.Cmp(*mem) > 0 {
			t.Errorf("%s: /dev/shm limit %v above the memory limit %v", what, shm, mem)
		}
	}
	w := d.workers.Spec
	gpus := w.Containers[0].Resources.Limits[ResourceGPU]
	if gpus.Value() != int64(s.GPUsPerWorker) {
		t.Errorf("worker nvidia.com/gpu limit %s, want %d", gpus.String(), s.GPUsPerWorker)
	}
	if !slices.ContainsFunc(w.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "nvidia.com/gpu" && tl.Operator == corev1.TolerationOpExists && tl.Effect == corev1.TaintEffectNoSchedule
	}) {
		t.Errorf("workers do not tolerate the nvidia.com/gpu taint: %v", w.Tolerations)
	}
	for k, v := range s.GPUNodeLabels {
		if w.NodeSelector[k] != v {
			t.Errorf("worker nodeSelector %v lacks %s=%s", w.NodeSelector, k, v)
		}
	}
	spec := d.rayCluster["spec"].(map[string]any)
	group := spec["workerGroupSpecs"].([]any)[0].(map[string]any)
	for _, k := range []string{"replicas", "minReplicas", "maxReplicas"} {
		if fmt.Sprint(group[k]) != fmt.Sprint(s.GPUWorkers) {
			t.Errorf("worker group %s = %v, want %d", k, group[k], s.GPUWorkers)
		}
	}

	// Warm-up: the prefetch init container runs before the worker.
	if len(w.InitContainers) != 1 {
		t.Fatalf("worker init containers %d, want the prefetch one", len(w.InitContainers))
	}
	pf := w.InitContainers[0]
	wantCmd := []string{"/blobfs", "prefetch", "--parallel", fmt.Sprint(s.PrefetchParallel), s.PrefetchPath}
	if pf.Name != PrefetchContainer || pf.Image != s.Image || !slices.Equal(append(pf.Command, pf.Args...), wantCmd) {
		t.Errorf("init container %s image %s command %q, want %s %s %q", pf.Name, pf.Image, append(pf.Command, pf.Args...), PrefetchContainer, s.Image, wantCmd)
	}
	// Read-only: prefetch opens the mount's control file read-only and
	// sends its request by ioctl, which a read-only mount allows
	// (TestPrefetchInitContainerWarmsARealMount runs it on a read-only
	// bind of a real mount).
	if m := findMount(pf, MountData); m == nil || !m.ReadOnly || volume(w, m.Name) == nil ||
		volume(w, m.Name).PersistentVolumeClaim == nil || volume(w, m.Name).PersistentVolumeClaim.ClaimName != ClaimDataset {
		t.Errorf("prefetch does not mount the dataset claim read-only at %s: %v", MountData, pf.VolumeMounts)
	}
	if len(pf.VolumeMounts) != 1 {
		t.Errorf("prefetch mounts %d volumes, want only the dataset", len(pf.VolumeMounts))
	}
	if !strings.HasPrefix(s.PrefetchPath, MountData) {
		t.Errorf("prefetch path %s is outside the dataset mount", s.PrefetchPath)
	}
	for _, c := range d.head.Spec.InitContainers {
		if c.Name == PrefetchContainer {
			t.Errorf("the head warms the dataset too; only GPU workers read it")
		}
	}

	// The example job: submitted to this RayCluster, its script mounted
	// on the head, reading and writing the mounts.
	job := d.rayJob["spec"].(map[string]any)
	sel := job["clusterSelector"].(map[string]any)
	rcName := d.rayCluster["metadata"].(map[string]any)["name"]
	if sel["ray.io/cluster"] != rcName {
		t.Errorf("RayJob clusterSelector %v, want ray.io/cluster=%v", sel, rcName)
	}
	ep := job["entrypoint"].(string)
	for _, want := range []string{ExampleMountPath + "/train.py", "--data " + MountData, "--storage " + MountCheckpoints, fmt.Sprintf("--workers %d", s.GPUWorkers)} {
		if !strings.Contains(ep, want) {
			t.Errorf("entrypoint %q lacks %q", ep, want)
		}
	}
	cm := d.configMaps[ExampleConfigMap]
	if cm == nil || !strings.Contains(cm.Data["train.py"], "storage_path=a.storage") {
		t.Errorf("ConfigMap %s does not carry the training script", ExampleConfigMap)
	}
	if m := findMount(d.head.Spec.Containers[0], ExampleMountPath); m == nil || volume(d.head.Spec, m.Name).ConfigMap == nil ||
		volume(d.head.Spec, m.Name).ConfigMap.Name != ExampleConfigMap {
		t.Errorf("head does not mount the ConfigMap %s at %s", ExampleConfigMap, ExampleMountPath)
	}
}

// checkPodMount: the pod's first container mounts claim at path through a
// volume that names the claim, read-only as asked on each.
func checkPodMount(t *testing.T, tmpl corev1.PodTemplateSpec, claim, path string, readOnly, volumeReadOnly bool) {
	t.Helper()
	c := tmpl.Spec.Containers[0]
	m := findMount(c, path)
	if m == nil {
		t.Errorf("container %s does not mount %s", c.Name, path)
		return
	}
	v := volume(tmpl.Spec, m.Name)
	if v == nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != claim {
		t.Errorf("container %s: %s comes from volume %q, not claim %s", c.Name, path, m.Name, claim)
		return
	}
	if m.ReadOnly != readOnly || v.PersistentVolumeClaim.ReadOnly != volumeReadOnly {
		t.Errorf("container %s: %s read-only %v (volume %v), want %v (volume %v)", c.Name, path, m.ReadOnly, v.PersistentVolumeClaim.ReadOnly, readOnly, volumeReadOnly)
	}
	if m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("container %s: %s without HostToContainer propagation: a repaired mount would not reach the pod", c.Name, path)
	}
}

func findMount(c corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volume(ps corev1.PodSpec, name string) *corev1.Volume {
	for i := range ps.Volumes {
		if ps.Volumes[i].Name == name {
			return &ps.Volumes[i]
		}
	}
	return nil
}

// TestRenderIsDeterministic: the same settings give the same bytes (map
// iteration order is random in Go, so repeated renders would show it).
func TestRenderIsDeterministic(t *testing.T) {
	s := testSettings()
	s.GPUNodeLabels = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}
	first := render(t, s)
	for range 20 {
		if again := render(t, s); !bytes.Equal(first, again) {
			t.Fatalf("two renders differ")
		}
	}
	if regexp.MustCompile(`20\d\d-\d\d-\d\d|creationTimestamp|status:`).Match(first) {
		t.Errorf("render carries a timestamp or status")
	}
}

// TestRenderRefusesInvalidSettings: Render validates; the caller cannot
// render a broken cluster by skipping Resolve.
func TestRenderRefusesInvalidSettings(t *testing.T) {
	s := testSettings()
	s.ClientID = "not-a-guid"
	if _, err := Render(s); err == nil || !strings.Contains(err.Error(), "clientID") {
		t.Errorf("Render with a bad client id: %v", err)
	}
}

// TestFilesGroupObjects: -o writes one file per object kind set, each a
// valid stream, in apply order by name.
func TestFilesGroupObjects(t *testing.T) {
	objs, err := Render(testSettings())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	written, err := WriteDir(dir, objs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range written {
		names = append(names, strings.TrimPrefix(p, dir+"/"))
	}
	want := []string{FileNamespace, FileStorage, FileRayCluster, FileRayJob}
	if !slices.Equal(names, want) {
		t.Fatalf("files %v, want %v", names, want)
	}
	var all []byte
	for _, p := range written {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte(Header)) {
			t.Errorf("%s lacks the header", p)
		}
		all = append(all, b...)
		all = append(all, '\n')
	}
	d := decodeStream(t, all)
	checkWiring(t, testSettings(), d)
}

// TestDefaultImageIsTheChartsImage: the prefetch init container runs the
// image the Helm chart installs by default (repository at appVersion), so
// the CLI in the pods matches the driver on the nodes.
func TestDefaultImageIsTheChartsImage(t *testing.T) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
		DriverName string `json:"driverName"`
	}
	for p, into := range map[string]any{"../../deploy/helm/blobfs/Chart.yaml": &chart, "../../deploy/helm/blobfs/values.yaml": &values} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	tag := values.Image.Tag
	if tag == "" {
		tag = chart.AppVersion
	}
	if want := values.Image.Repository + ":" + tag; DefaultImage != want {
		t.Errorf("DefaultImage %q, the chart's default image %q", DefaultImage, want)
	}
	if values.DriverName != csi.DriverName {
		t.Errorf("chart driverName %q, rendered PVs use %q", values.DriverName, csi.DriverName)
	}
}
