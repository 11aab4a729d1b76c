// Package deploy holds the Kubernetes deployment material (the Helm chart in
// helm/blobfs) and the tests that render it.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"

	"github.com/blobfs/blobfs/csi"
	"github.com/blobfs/blobfs/internal/buildinfo"
	"github.com/blobfs/blobfs/internal/cli"
)

// helmVersion is what `make helm-lint` installs into .tools/bin.
const helmVersion = "v3.22.0"

const chartDir = "helm/blobfs"

// helmBinary finds helm: $BLOBFS_HELM, then <repo>/.tools/bin/helm (what
// `make helm-lint` installs), then PATH. If none is there it installs helm
// into <repo>/.tools/bin with `go install` (a few minutes, once; the module
// proxy must be reachable), except with -short, where the test skips.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BLOBFS_HELM"); p != "" {
		return p
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(repo, ".tools", "bin", "helm")
	if _, err := os.Stat(local); err == nil {
		return local
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if testing.Short() {
		t.Skipf("helm not found ($BLOBFS_HELM, %s, PATH) and -short given; run `make helm-lint` once to install it", local)
	}
	goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	t.Logf("helm not found; installing helm %s into %s with go install (a few minutes, once)", helmVersion, filepath.Dir(local))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", "helm.sh/helm/v3/cmd/helm@"+helmVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(local), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("helm is not installed and `go install helm.sh/helm/v3/cmd/helm@%s` failed (offline?): %v\n%s\ninstall helm and set BLOBFS_HELM, or run `make helm-lint`", helmVersion, err, tail(out, 2000))
	}
	t.Logf("installed helm in %s", time.Since(start).Round(time.Second))
	return local
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// rendered is the chart's output, decoded strictly into k8s.io/api types.
type rendered struct {
	CSIDrivers      []*storagev1.CSIDriver
	DaemonSets      []*appsv1.DaemonSet
	Deployments     []*appsv1.Deployment
	ServiceAccounts []*corev1.ServiceAccount
	PVCs            []*corev1.PersistentVolumeClaim
	ClusterRoles    []*rbacv1.ClusterRole
	ClusterBindings []*rbacv1.ClusterRoleBinding
	Roles           []*rbacv1.Role
	RoleBindings    []*rbacv1.RoleBinding
	StorageClasses  []*storagev1.StorageClass
}

const namespace = "blobfs-system"

func render(t *testing.T, helm string, set ...string) *rendered {
	t.Helper()
	args := []string{"template", "blobfs", chartDir, "--namespace", namespace}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	r, err := decodeAll(out)
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return r
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func decodeAll(manifest []byte) (*rendered, error) {
	r := &rendered{}
	for i, doc := range docSep.Split(string(manifest), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %v\n%s", i, err, doc)
		}
		var tm struct{ APIVersion, Kind string }
		if err := json.Unmarshal(js, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		var obj any
		var wantAPI string
		switch tm.Kind {
		case "CSIDriver":
			o := &storagev1.CSIDriver{}
			obj, wantAPI, r.CSIDrivers = o, "storage.k8s.io/v1", append(r.CSIDrivers, o)
		case "StorageClass":
			o := &storagev1.StorageClass{}
			obj, wantAPI, r.StorageClasses = o, "storage.k8s.io/v1", append(r.StorageClasses, o)
		case "DaemonSet":
			o := &appsv1.DaemonSet{}
			obj, wantAPI, r.DaemonSets = o, "apps/v1", append(r.DaemonSets, o)
		case "Deployment":
			o := &appsv1.Deployment{}
			obj, wantAPI, r.Deployments = o, "apps/v1", append(r.Deployments, o)
		case "ServiceAccount":
			o := &corev1.ServiceAccount{}
			obj, wantAPI, r.ServiceAccounts = o, "v1", append(r.ServiceAccounts, o)
		case "PersistentVolumeClaim":
			o := &corev1.PersistentVolumeClaim{}
			obj, wantAPI, r.PVCs = o, "v1", append(r.PVCs, o)
		case "ClusterRole":
			o := &rbacv1.ClusterRole{}
			obj, wantAPI, r.ClusterRoles = o, "rbac.authorization.k8s.io/v1", append(r.ClusterRoles, o)
		case "ClusterRoleBinding":
			o := &rbacv1.ClusterRoleBinding{}
			obj, wantAPI, r.ClusterBindings = o, "rbac.authorization.k8s.io/v1", append(r.ClusterBindings, o)
		case "Role":
			o := &rbacv1.Role{}
			obj, wantAPI, r.Roles = o, "rbac.authorization.k8s.io/v1", append(r.Roles, o)
		case "RoleBinding":
			o := &rbacv1.RoleBinding{}
			obj, wantAPI, r.RoleBindings = o, "rbac.authorization.k8s.io/v1", append(r.RoleBindings, o)
		default:
			return nil, fmt.Errorf("document %d: unexpected kind %q (add it to decodeAll)", i, tm.Kind)
		}
		if tm.APIVersion != wantAPI {
			return nil, fmt.Errorf("%s: apiVersion %q, want %q", tm.Kind, tm.APIVersion, wantAPI)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): strict decode: %v\n%s", i, tm.Kind, err, doc)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("document %d (%s): trailing data", i, tm.Kind)
		}
	}
	return r, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func one[T any](t *testing.T, what string, xs []T) T {
	t.Helper()
	if len(xs) != 1 {
		t.Fatalf("rendered %d %s, want 1", len(xs), what)
	}
	return xs[0]
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// flagValue returns the value of --name=V or --name V in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func mustFlag(t *testing.T, c corev1.Container, name string) string {
	t.Helper()
	v, ok := flagValue(c.Args, name)
	if !ok {
		t.Fatalf("container %s: no --%s in %q", c.Name, name, c.Args)
	}
	return v
}

// checkBlobfsArgs parses a blobfs container's args with the real `blobfs
// csi` command and validates them as the binary would (unknown flags, bad
// modes, relative paths fail here rather than in a CrashLoopBackOff).
func checkBlobfsArgs(t *testing.T, c corev1.Container, mode string) cli.CSIOptions {
	t.Helper()
	if len(c.Command) != 0 {
		t.Errorf("container %s: command %q; want the image's ENTRYPOINT (/blobfs) run directly, no shell", c.Name, c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "csi" {
		t.Fatalf("container %s: args %q, want them to start with csi", c.Name, c.Args)
	}
	root := cli.NewRootCmd(&cli.Deps{
		Stdout:    io.Discard,
		Stderr:    io.Discard,
		LookupEnv: func(string) (string, bool) { return "", false },
		Build:     func() buildinfo.Info { return buildinfo.Info{} },
	})
	cmd, rest, err := root.Find(c.Args)
	if err != nil || cmd.Name() != "csi" {
		t.Fatalf("container %s: args %q do not select `blobfs csi`: %v", c.Name, c.Args, err)
	}
	// kubelet expands $(KUBE_NODE_NAME) from the env; stand in for it.
	var args []string
	for _, a := range rest {
		args = append(args, strings.ReplaceAll(a, "$(KUBE_NODE_NAME)", "aks-gpu-12345678-vmss000000"))
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("container %s: blobfs csi rejects %q: %v", c.Name, c.Args, err)
	}
	if n := cmd.Flags().NArg(); n != 0 {
		t.Fatalf("container %s: stray arguments %q", c.Name, cmd.Flags().Args())
	}
	get := func(name string) string {
		v, err := cmd.Flags().GetString(name)
		if err != nil {
			f := cmd.Flags().Lookup(name)
			if f == nil {
				t.Fatalf("blobfs csi has no --%s", name)
			}
			return f.Value.String()
		}
		return v
	}
	o := cli.CSIOptions{
		Endpoint:        get("endpoint"),
		NodeID:          get("node-id"),
		Mode:            get("mode"),
		DriverName:      get("driver-name"),
		StateDir:        get("state-dir"),
		MounterEndpoint: get("mounter-endpoint"),
		CacheDir:        get("cache-dir"),
		KubeletDir:      get("kubelet-dir"),
		StorageAccount:  get("storage-account"),
		TenantID:        get("tenant-id"),
	}
	if o.Mode != mode {
		t.Errorf("container %s: --mode %q, want %q", c.Name, o.Mode, mode)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("container %s: blobfs csi would refuse its flags: %v", c.Name, err)
	}
	return o
}

func socketPath(t *testing.T, url string) string {
	t.Helper()
	p, err := csi.SocketPath(url)
	if err != nil {
		t.Fatalf("socket %q: %v", url, err)
	}
	return p
}

// mountFor returns the container's mount of volume name.
func mountFor(c corev1.Container, volume string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

// volumeAt returns the hostPath volume a container mounts at or above
// path (the longest such mount), and the host path it maps to.
func hostPathOf(t *testing.T, spec corev1.PodSpec, c corev1.Container, path string) string {
	t.Helper()
	best := corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		if (path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")) && len(m.MountPath) > len(best.MountPath) {
			best = m
		}
	}
	if best.Name == "" {
		t.Fatalf("container %s: nothing mounted at %s", c.Name, path)
	}
	for _, v := range spec.Volumes {
		if v.Name == best.Name {
			if v.HostPath == nil {
				t.Fatalf("container %s: %s comes from volume %s, which is not a hostPath", c.Name, path, v.Name)
			}
			rel := strings.TrimPrefix(path, best.MountPath)
			return filepath.Join(v.HostPath.Path, rel)
		}
	}
	t.Fatalf("container %s mounts unknown volume %s", c.Name, best.Name)
	return ""
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

type want struct {
	kubeletDir  string
	cacheHost   string
	wiClientID  string // controller ServiceAccount annotation
	wiLabel     bool
	scClientID  string // StorageClass per-pod workload identity
	storageAcct string
	sc, pvc     bool
}

func TestChartDefaults(t *testing.T) {
	helm := helmBinary(t)
	r := render(t, helm)
	checkChart(t, r, want{kubeletDir: "/var/lib/kubelet", cacheHost: "/var/lib/blobfs-cache", wiLabel: true, sc: true})
}

func TestChartCustomValues(t *testing.T) {
	helm := helmBinary(t)
	const client, podClient = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
	r := render(t, helm,
		"kubeletDir=/var/lib/k0s/kubelet",
		"cache.hostPath=/mnt/nvme/blobfs",
		"cache.sizeMB=409600",
		"storageAccount=mydata",
		"workloadIdentity.clientID="+client,
		"storageClass.workloadIdentity.clientID="+podClient,
		"storageClass.containerName=datasets",
		"pvc.create=true",
		"image.tag=v9.9.9",
	)
	checkChart(t, r, want{kubeletDir: "/var/lib/k0s/kubelet", cacheHost: "/mnt/nvme/blobfs", wiClientID: client, wiLabel: true,
		scClientID: podClient, storageAcct: "mydata", sc: true, pvc: true})
	sc := r.StorageClasses[0]
	if sc.Parameters["containerName"] != "datasets" || sc.Parameters["cacheSizeMB"] != "409600" {
		t.Errorf("StorageClass parameters %v: want containerName=datasets, cacheSizeMB=409600", sc.Parameters)
	}
	ds := r.DaemonSets[0]
	for _, c := range ds.Spec.Template.Spec.Containers {
		if (c.Name == "node" || c.Name == "mounter") && !strings.HasSuffix(c.Image, ":v9.9.9") {
			t.Errorf("container %s image %q, want tag v9.9.9", c.Name, c.Image)
		}
	}
}

func TestChartToggles(t *testing.T) {
	helm := helmBinary(t)
	r := render(t, helm, "storageClass.create=false", "workloadIdentity.enabled=false")
	checkChart(t, r, want{kubeletDir: "/var/lib/kubelet", cacheHost: "/var/lib/blobfs-cache"})
}

func checkChart(t *testing.T, r *rendered, w want) {
	driver := one(t, "CSIDrivers", r.CSIDrivers)
	ds := one(t, "DaemonSets", r.DaemonSets)
	dep := one(t, "Deployments", r.Deployments)

	// CSIDriver.
	if driver.Name != csi.DriverName {
		t.Errorf("CSIDriver name %q, want %q", driver.Name, csi.DriverName)
	}
	s := driver.Spec
	if s.AttachRequired == nil || *s.AttachRequired {
		t.Error("CSIDriver: attachRequired must be false")
	}
	if s.PodInfoOnMount == nil || !*s.PodInfoOnMount {
		t.Error("CSIDriver: podInfoOnMount must be true")
	}
	if s.RequiresRepublish == nil || !*s.RequiresRepublish {
		t.Error("CSIDriver: requiresRepublish must be true (workload identity tokens are refreshed by republish)")
	}
	if s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("CSIDriver: fsGroupPolicy %v, want File", s.FSGroupPolicy)
	}
	if len(s.TokenRequests) != 1 || s.TokenRequests[0].Audience != "api://AzureADTokenExchange" {
		t.Errorf("CSIDriver: tokenRequests %+v, want one with audience api://AzureADTokenExchange", s.TokenRequests)
	}
	if !slices.Equal(s.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}) {
		t.Errorf("CSIDriver: volumeLifecycleModes %v, want [Persistent]", s.VolumeLifecycleModes)
	}

	// Node DaemonSet.
	pod := ds.Spec.Template.Spec
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("node: priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	if pod.HostNetwork {
		t.Error("node: hostNetwork must be false")
	}
	if pod.ShareProcessNamespace != nil && *pod.ShareProcessNamespace {
		t.Error("node: shareProcessNamespace would make the pause process PID 1 instead of the mounter")
	}
	if ds.Spec.UpdateStrategy.Type == "" {
		t.Error("node: no updateStrategy")
	}
	hasToleration := func(key, value string) bool {
		for _, tol := range pod.Tolerations {
			if tol.Key == key && tol.Effect == corev1.TaintEffectNoSchedule &&
				(tol.Operator == corev1.TolerationOpExists || (tol.Operator == corev1.TolerationOpEqual && tol.Value == value)) {
				return true
			}
		}
		return false
	}
	if !hasToleration("nvidia.com/gpu", "") || !hasToleration("sku", "gpu") {
		t.Errorf("node: tolerations %+v lack the GPU taints nvidia.com/gpu and sku=gpu", pod.Tolerations)
	}
	sel := ds.Spec.Selector.MatchLabels
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("node: selector %s=%s does not match the pod template", k, v)
		}
	}

	node := container(t, pod, "node")
	mounter := container(t, pod, "mounter")
	registrar := container(t, pod, "node-driver-registrar")
	liveness := container(t, pod, "liveness-probe")

	no := checkBlobfsArgs(t, node, "node")
	mo := checkBlobfsArgs(t, mounter, "mounter")
	if v, _ := flagValue(node.Args, "node-id"); v != "$(KUBE_NODE_NAME)" {
		t.Errorf("node: --node-id %q, want $(KUBE_NODE_NAME)", v)
	}
	var nodeNameEnv bool
	for _, e := range node.Env {
		nodeNameEnv = nodeNameEnv || (e.Name == "KUBE_NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName")
	}
	if !nodeNameEnv {
		t.Error("node: KUBE_NODE_NAME is not taken from spec.nodeName")
	}
	wantState := w.kubeletDir + "/plugins/" + csi.DriverName
	for _, o := range []cli.CSIOptions{no, mo} {
		if o.StateDir != wantState || o.KubeletDir != w.kubeletDir || o.DriverName != csi.DriverName {
			t.Errorf("%s: state dir %q kubelet dir %q driver %q, want %q %q %q", o.Mode, o.StateDir, o.KubeletDir, o.DriverName, wantState, w.kubeletDir, csi.DriverName)
		}
	}
	csiSock := socketPath(t, no.Endpoint)
	mounterSock := socketPath(t, no.MounterEndpoint)
	if got := socketPath(t, mo.MounterEndpoint); got != mounterSock {
		t.Errorf("mounter listens on %s but the node plugin dials %s", got, mounterSock)
	}
	if csiSock != wantState+"/csi.sock" || mounterSock != wantState+"/mounter.sock" {
		t.Errorf("sockets %s, %s: want csi.sock and mounter.sock in %s", csiSock, mounterSock, wantState)
	}
	// The same host file behind each socket path, in every container.
	hostCSI := hostPathOf(t, pod, node, csiSock)
	if got := hostPathOf(t, pod, registrar, mustFlag(t, registrar, "csi-address")); got != hostCSI {
		t.Errorf("registrar --csi-address reaches %s on the host, the node plugin listens on %s", got, hostCSI)
	}
	if got := mustFlag(t, registrar, "kubelet-registration-path"); got != hostCSI {
		t.Errorf("registrar --kubelet-registration-path %s, want the host path of the node socket %s", got, hostCSI)
	}
	if got := hostPathOf(t, pod, liveness, mustFlag(t, liveness, "csi-address")); got != hostCSI {
		t.Errorf("livenessprobe --csi-address reaches %s on the host, the node plugin listens on %s", got, hostCSI)
	}
	if got, want := hostPathOf(t, pod, mounter, mounterSock), hostPathOf(t, pod, node, mounterSock); got != want {
		t.Errorf("mounter socket: mounter writes %s on the host, node dials %s", got, want)
	}
	if hostPathOf(t, pod, node, wantState) != wantState || hostPathOf(t, pod, mounter, wantState) != wantState {
		t.Error("state dir must be the same host path at the same path in node and mounter")
	}
	if got := hostPathOf(t, pod, registrar, "/registration"); got != w.kubeletDir+"/plugins_registry" {
		t.Errorf("registrar /registration is %s on the host, want %s/plugins_registry", got, w.kubeletDir)
	}
	if !strings.HasPrefix(registrar.Image, "registry.k8s.io/sig-storage/csi-node-driver-registrar:") ||
		!strings.HasPrefix(liveness.Image, "registry.k8s.io/sig-storage/livenessprobe:") {
		t.Errorf("sidecar images %s, %s", registrar.Image, liveness.Image)
	}
	// liveness: the node container's probe hits the sidecar's port.
	hp := mustFlag(t, liveness, "health-port")
	if node.LivenessProbe == nil || node.LivenessProbe.HTTPGet == nil || len(node.Ports) == 0 || fmt.Sprint(node.Ports[0].ContainerPort) != hp {
		t.Errorf("node: livenessProbe/ports do not use livenessprobe's --health-port %s", hp)
	}

	for _, c := range []corev1.Container{node, mounter} {
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("%s: must be privileged", c.Name)
		}
		m, ok := mountFor(c, "kubelet-dir")
		if !ok || m.MountPath != w.kubeletDir || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
			t.Errorf("%s: kubelet dir %s must be mounted at the same path with Bidirectional propagation (got %+v)", c.Name, w.kubeletDir, m)
		}
		if hostPathOf(t, pod, c, w.kubeletDir) != w.kubeletDir {
			t.Errorf("%s: kubelet dir is not the host's %s", c.Name, w.kubeletDir)
		}
		if hostPathOf(t, pod, c, "/dev/fuse") != "/dev/fuse" {
			t.Errorf("%s: /dev/fuse not mounted", c.Name)
		}
	}
	for _, c := range []corev1.Container{registrar, liveness} {
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			t.Errorf("%s: sidecar need not be privileged", c.Name)
		}
	}
	if v := volume(t, pod, "kubelet-dir"); v.HostPath == nil || v.HostPath.Path != w.kubeletDir {
		t.Errorf("kubelet-dir volume %+v, want hostPath %s", v.VolumeSource, w.kubeletDir)
	}
	// Cache: the hostPath, mounted into the mounter at its --cache-dir.
	if got := hostPathOf(t, pod, mounter, mo.CacheDir); got != w.cacheHost {
		t.Errorf("mounter --cache-dir %s is %s on the host, want %s", mo.CacheDir, got, w.cacheHost)
	}
	cm, _ := mountFor(mounter, "cache-dir")
	if cv := volume(t, pod, cm.Name); cv.HostPath == nil || cv.HostPath.Type == nil || *cv.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("cache volume %+v: want hostPath type DirectoryOrCreate", cv.VolumeSource)
	}
	if _, ok := mountFor(node, "cache-dir"); ok {
		t.Error("node: the cache belongs to the mounter only")
	}

	// Controller Deployment.
	cpod := dep.Spec.Template.Spec
	ctrl := container(t, cpod, "controller")
	prov := container(t, cpod, "csi-provisioner")
	co := checkBlobfsArgs(t, ctrl, "controller")
	if co.StorageAccount != w.storageAcct {
		t.Errorf("controller --storage-account %q, want %q", co.StorageAccount, w.storageAcct)
	}
	if got := hostlessPath(t, cpod, prov, mustFlag(t, prov, "csi-address")); got != hostlessPath(t, cpod, ctrl, socketPath(t, co.Endpoint)) {
		t.Error("csi-provisioner --csi-address does not reach the controller socket")
	}
	if !slices.Contains(prov.Args, "--extra-create-metadata") {
		t.Error("csi-provisioner: --extra-create-metadata missing (the controller names containers after PVCs)")
	}
	if !strings.HasPrefix(prov.Image, "registry.k8s.io/sig-storage/csi-provisioner:") {
		t.Errorf("provisioner image %s", prov.Image)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 1 {
		t.Error("controller: replicas")
	}
	if got := dep.Spec.Template.Labels["azure.workload.identity/use"]; (got == "true") != w.wiLabel {
		t.Errorf("controller pod label azure.workload.identity/use=%q, want set=%v", got, w.wiLabel)
	}

	// ServiceAccounts.
	sas := map[string]*corev1.ServiceAccount{}
	for _, sa := range r.ServiceAccounts {
		sas[sa.Name] = sa
	}
	csa, ok := sas[cpod.ServiceAccountName]
	if !ok {
		t.Fatalf("controller ServiceAccount %q not rendered", cpod.ServiceAccountName)
	}
	if csa.Namespace != namespace {
		t.Errorf("controller ServiceAccount namespace %q", csa.Namespace)
	}
	if got := csa.Annotations["azure.workload.identity/client-id"]; got != w.wiClientID {
		t.Errorf("controller ServiceAccount client-id annotation %q, want %q", got, w.wiClientID)
	}
	if _, ok := sas[pod.ServiceAccountName]; !ok {
		t.Errorf("node ServiceAccount %q not rendered", pod.ServiceAccountName)
	}

	// RBAC: the provisioner's ServiceAccount may do what csi-provisioner does.
	need := map[string][]string{
		"/persistentvolumes":            {"get", "list", "watch", "create", "delete"},
		"/persistentvolumeclaims":       {"get", "list", "watch", "update"},
		"storage.k8s.io/storageclasses": {"get", "list", "watch"},
		"/events":                       {"list", "watch", "create", "update", "patch"},
		"storage.k8s.io/csinodes":       {"get", "list", "watch"},
		"/nodes":                        {"get", "list", "watch"},
		"coordination.k8s.io/leases":    {"get", "list", "watch", "create", "update", "delete"},
	}
	granted := map[string]map[string]bool{}
	roles := map[string]*rbacv1.ClusterRole{}
	for _, cr := range r.ClusterRoles {
		roles[cr.Name] = cr
	}
	for _, b := range r.ClusterBindings {
		bound := false
		for _, s := range b.Subjects {
			bound = bound || (s.Kind == "ServiceAccount" && s.Name == csa.Name && s.Namespace == namespace)
		}
		cr, ok := roles[b.RoleRef.Name]
		if !bound || b.RoleRef.Kind != "ClusterRole" {
			continue
		}
		if !ok {
			t.Errorf("ClusterRoleBinding %s refers to missing ClusterRole %s", b.Name, b.RoleRef.Name)
			continue
		}
		for _, rule := range cr.Rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					k := g + "/" + res
					if granted[k] == nil {
						granted[k] = map[string]bool{}
					}
					for _, v := range rule.Verbs {
						granted[k][v] = true
					}
				}
			}
		}
	}
	for res, verbs := range need {
		for _, v := range verbs {
			if !granted[res][v] {
				t.Errorf("RBAC: controller ServiceAccount may not %s %s", v, res)
			}
		}
	}

	// Example StorageClass and PVC.
	if !w.sc {
		if len(r.StorageClasses) != 0 {
			t.Error("storageClass.create=false still renders a StorageClass")
		}
	} else {
		sc := one(t, "StorageClasses", r.StorageClasses)
		if sc.Provisioner != driver.Name {
			t.Errorf("StorageClass provisioner %q, CSIDriver %q", sc.Provisioner, driver.Name)
		}
		p := sc.Parameters
		if p["protocol"] != "fuse2" {
			t.Errorf("StorageClass protocol %q, want fuse2", p["protocol"])
		}
		if p["storageAccount"] != w.storageAcct {
			t.Errorf("StorageClass storageAccount %q, want %q", p["storageAccount"], w.storageAcct)
		}
		if w.scClientID != "" && (p["mountWithWorkloadIdentityToken"] != "true" || p["clientID"] != w.scClientID) {
			t.Errorf("StorageClass parameters %v: want mountWithWorkloadIdentityToken=true clientID=%s", p, w.scClientID)
		}
		if w.scClientID == "" && p["mountWithWorkloadIdentityToken"] != "" {
			t.Errorf("StorageClass asks for workload identity without a clientID: %v", p)
		}
		if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingImmediate {
			t.Errorf("StorageClass volumeBindingMode %v, want Immediate", sc.VolumeBindingMode)
		}
		if sc.ReclaimPolicy == nil {
			t.Error("StorageClass: no reclaimPolicy")
		}
		if !slices.Contains(sc.MountOptions, "-o allow_other") {
			t.Errorf("StorageClass mountOptions %q lack -o allow_other", sc.MountOptions)
		}
		for k := range p {
			if !knownParam(k) {
				t.Errorf("StorageClass parameter %q is not a blobfs volume attribute (csi/doc.go)", k)
			}
		}
	}
	if !w.pvc {
		if len(r.PVCs) != 0 {
			t.Error("pvc.create=false still renders a PVC")
		}
	} else {
		pvc := one(t, "PVCs", r.PVCs)
		if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}) {
			t.Errorf("PVC access modes %v, want [ReadWriteMany]", pvc.Spec.AccessModes)
		}
		if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != r.StorageClasses[0].Name {
			t.Errorf("PVC storageClassName %v, want %s", pvc.Spec.StorageClassName, r.StorageClasses[0].Name)
		}
	}
}

// hostlessPath names a path in a pod as volume:relative, for containers
// sharing an emptyDir.
func hostlessPath(t *testing.T, spec corev1.PodSpec, c corev1.Container, path string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return m.Name + ":" + strings.TrimPrefix(path, m.MountPath)
		}
	}
	t.Fatalf("container %s: %s is on no volume", c.Name, path)
	return ""
}

func knownParam(k string) bool {
	switch strings.ToLower(k) {
	case "storageaccount", "containername", "containernameprefix", "subdir", "prefix", "protocol",
		"clientid", "tenantid", "mountwithworkloadidentitytoken", "cachesizemb", "blocksizemb",
		"prefetch", "umask", "uid", "gid", "storageendpointsuffix", "azurestorageauthtype":
		return true
	}
	return false
}
