package crdschema

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
)

// The KubeRay CRDs are checked in next to the bootstrap package that uses
// them (see ../testdata/kuberay/README.md).
const kuberayDir = "../testdata/kuberay/"

var (
	crdOnce  sync.Once
	crdCache = map[string]*CRD{}
	crdErr   error
)

func kuberay(t *testing.T, kind string) *CRD {
	t.Helper()
	crdOnce.Do(func() {
		for k, f := range map[string]string{"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"} {
			b, err := os.ReadFile(kuberayDir + f)
			if err != nil {
				crdErr = err
				return
			}
			c, err := LoadCRD(b, "v1")
			if err != nil {
				crdErr = err
				return
			}
			crdCache[k] = c
		}
	})
	if crdErr != nil {
		t.Fatal(crdErr)
	}
	return crdCache[kind]
}

const validCluster = `
apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: ray
  namespace: ray
spec:
  rayVersion: "2.43.0"
  headGroupSpec:
    rayStartParams:
      num-cpus: "0"
    template:
      spec:
        containers:
          - name: ray-head
            image: rayproject/ray:2.43.0
            resources:
              limits:
                memory: 16Gi
              requests:
                cpu: 4
                memory: 16Gi
  workerGroupSpecs:
    - groupName: gpu
      replicas: 2
      minReplicas: 2
      maxReplicas: 2
      template:
        spec:
          tolerations:
            - key: nvidia.com/gpu
              operator: Exists
              effect: NoSchedule
          containers:
            - name: ray-worker
              image: rayproject/ray:2.43.0
              resources:
                limits:
                  nvidia.com/gpu: 1
`

func TestLoadKubeRayCRDs(t *testing.T) {
	for _, kind := range []string{"RayCluster", "RayJob"} {
		c := kuberay(t, kind)
		if c.Kind != kind || c.APIVersion() != "ray.io/v1" {
			t.Errorf("%s: loaded %s %s", kind, c.APIVersion(), c.Kind)
		}
		if c.Schema.Properties["spec"] == nil {
			t.Errorf("%s: schema has no spec", kind)
		}
		// The CEL rules are not evaluated; they must at least be visible.
		if len(c.Schema.Rules()) == 0 {
			t.Errorf("%s: no x-kubernetes-validations found; KubeRay's CRDs carry some", kind)
		}
	}
}

func TestValidRayClusterPasses(t *testing.T) {
	if err := kuberay(t, "RayCluster").ValidateYAML([]byte(validCluster)); err != nil {
		t.Fatalf("valid RayCluster rejected:\n%v", err)
	}
}

// TestInvalidRayClusters: each mutation of the valid cluster must be
// rejected, with the field path and the reason in the error.
func TestInvalidRayClusters(t *testing.T) {
	c := kuberay(t, "RayCluster")
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"wrong type: replicas as a string", "replicas: 2", `replicas: "two"`,
			[]string{".spec.workerGroupSpecs[0].replicas", "a string, want integer"}},
		{"wrong type: rayStartParams value as a number", `num-cpus: "0"`, "num-cpus: 0",
			[]string{".spec.headGroupSpec.rayStartParams.num-cpus", "want string"}},
		{"unknown field in spec", "  rayVersion:", "  rayVersions: x\n  rayVersion:",
			[]string{".spec.rayVersions", "unknown field"}},
		{"unknown field deep in a pod template", "            image: rayproject/ray:2.43.0\n            resources:",
			"            image: rayproject/ray:2.43.0\n            gpus: 1\n            resources:",
			[]string{".spec.headGroupSpec.template.spec.containers[0].gpus", "unknown field"}},
		{"missing required field", "    - groupName: gpu\n", "    - rayStartParams: {}\n",
			[]string{".spec.workerGroupSpecs[0].groupName", "required"}},
		{"enum", "operator: Exists", "operator: Sometimes", nil}, // tolerations.operator is free text in KubeRay's schema
		{"int-or-string: a boolean quantity", "cpu: 4", "cpu: true",
			[]string{".spec.headGroupSpec.template.spec.containers[0].resources.requests.cpu", "want an integer or a string"}},
		{"list-map: duplicate container names", "          containers:\n            - name: ray-worker",
			"          containers:\n            - name: ray-worker\n              image: x\n            - name: ray-worker",
			[]string{".spec.workerGroupSpecs[0].template.spec.containers[1]", "duplicate key"}},
		{"null where not nullable", "rayVersion: \"2.43.0\"", "rayVersion: null",
			[]string{".spec.rayVersion", "null"}},
		{"unknown field in root metadata", "  namespace: ray", "  namespace: ray\n  nam: x",
			[]string{".metadata", "unknown field \"nam\""}},
		{"wrong kind", "kind: RayCluster", "kind: RayJob", []string{"apiVersion/kind"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(validCluster, tc.old) {
				t.Fatalf("test bug: %q not in the valid cluster", tc.old)
			}
			doc := strings.Replace(validCluster, tc.old, tc.new, 1)
			err := c.ValidateYAML([]byte(doc))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("accepted by KubeRay's schema, but rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestRayJob(t *testing.T) {
	c := kuberay(t, "RayJob")
	job := `
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: train, namespace: ray}
spec:
  entrypoint: python train.py
  clusterSelector: {ray.io/cluster: ray}
  submissionMode: K8sJobMode
`
	if err := c.ValidateYAML([]byte(job)); err != nil {
		t.Fatalf("valid RayJob rejected: %v", err)
	}
	bad := job + "  deletionStrategy:\n    onSuccess: {policy: DeleteEverything}\n    onFailure: {policy: DeleteNone}\n"
	if err := c.ValidateYAML([]byte(bad)); err == nil || !strings.Contains(err.Error(), ".spec.deletionStrategy.onSuccess.policy: \"DeleteEverything\" is not one of") {
		t.Errorf("deletion policy outside its enum: err = %v", err)
	}
	bad = strings.Replace(job, "entrypoint: python train.py", "entrypoint: [python, train.py]", 1)
	if err := c.ValidateYAML([]byte(bad)); err == nil || !strings.Contains(err.Error(), ".spec.entrypoint: an array, want string") {
		t.Errorf("entrypoint as a list: err = %v", err)
	}
	dup := "apiVersion: ray.io/v1\nkind: RayJob\nkind: RayJob\nmetadata: {name: x}\n"
	if err := c.ValidateYAML([]byte(dup)); err == nil {
		t.Errorf("duplicate key accepted")
	}
}

// TestKeywords exercises each keyword on a small hand-written schema.
func TestKeywords(t *testing.T) {
	crd := []byte(`
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.com}
spec:
  group: example.com
  names: {kind: Thing}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, format: int32, minimum: 1, maximum: 10}
                ratio: {type: number}
                name: {type: string, pattern: '^[a-z]+$', maxLength: 5, minLength: 2}
                mode: {type: string, enum: [a, b]}
                tags: {type: array, items: {type: string}, x-kubernetes-list-type: set, maxItems: 3}
                labels: {type: object, additionalProperties: {type: string}}
                free: {type: object, x-kubernetes-preserve-unknown-fields: true}
                open: {type: object, additionalProperties: true}
                port: {x-kubernetes-int-or-string: true, anyOf: [{type: integer}, {type: string}]}
                maybe: {type: string, nullable: true}
                when: {type: string, format: date-time}
`)
	c, err := LoadCRD(crd, "v1")
	if err != nil {
		t.Fatal(err)
	}
	base := "apiVersion: example.com/v1\nkind: Thing\nmetadata: {name: t}\nspec:\n"
	ok := []string{
		"  size: 3", "  size: 10", "  size: 1", "  ratio: 0.5", "  ratio: 2", "  name: abc", "  mode: b", "  tags: [x, z]", "  labels: {a: b}",
		"  free: {anything: [1, {deep: true}]}", "  open: {x: 1}", "  port: 8080", "  port: http",
		"  maybe: null", "  when: 2026-01-02T03:04:05Z",
	}
	for _, extra := range ok {
		if !strings.Contains(extra, "size") {
			extra = "  size: 3\n" + extra
		}
		if err := c.ValidateYAML([]byte(base + extra + "\n")); err != nil {
			t.Errorf("%q rejected: %v", extra, err)
		}
	}
	bad := map[string]string{
		"  size: 0":                  "below the minimum",
		"  size: 11":                 "above the maximum",
		"  size: 1.5":                "want integer",
		"  ratio: x":                 "want number",
		"  name: ABC":                "does not match",
		"  name: abcdefg":            "at most 5",
		"  name: a":                  "at least 2",
		"  mode: c":                  "is not one of",
		"  tags: [x, x]":             "duplicate of [0] in a set",
		"  tags: [a, b, c, d]":       "at most 3",
		"  tags: [1]":                "want string",
		"  labels: {a: 1}":           "want string",
		"  port: 1.5":                "want an integer or a string",
		"  port: [1]":                "want an integer or a string",
		"  when: yesterday":          "not a date-time",
		"  other: 1":                 "unknown field",
		"  labels: [a]":              "want object",
		"  free: 3":                  "want object",
		"  maybe: 3":                 "want string",
		"  size: 3000000000000":      "does not fit int32",
		"  name: null":               "not nullable",
		"  tags: {a: b}":             "want array",
		"  tags: [x, y]":             ".spec.tags[1]: a boolean, want string", // YAML 1.1, as kubectl reads it
		"  open: {x: 1}\n  bogus: 1": "unknown field",
	}
	for extra, want := range bad {
		if !strings.Contains(extra, "size") {
			extra = "  size: 3\n" + extra
		}
		err := c.ValidateYAML([]byte(base + extra + "\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one containing %q", extra, err, want)
		}
	}
	if err := c.ValidateYAML([]byte("apiVersion: example.com/v1\nkind: Thing\nmetadata: {name: t}\nspec: {}\n")); err == nil ||
		!strings.Contains(err.Error(), ".spec.size: required") {
		t.Errorf("missing required: %v", err)
	}
	if err := c.ValidateYAML([]byte("apiVersion: example.com/v1\nkind: Thing\nspec: {size: 1}\n")); err == nil ||
		!strings.Contains(err.Error(), ".metadata: required") {
		t.Errorf("missing metadata: %v", err)
	}
}

// TestLoadRefusesUnknownKeywords: a schema keyword crdschema does not
// know (here "oneOf") must fail loading rather than be ignored.
func TestLoadRefusesUnknownKeywords(t *testing.T) {
	crd := []byte(`
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.com}
spec:
  group: example.com
  names: {kind: Thing}
  versions:
    - name: v1
      served: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, oneOf: [{required: [a]}]}
`)
	if _, err := LoadCRD(crd, "v1"); err == nil || !strings.Contains(err.Error(), "oneOf") {
		t.Errorf("LoadCRD with oneOf: err = %v", err)
	}
	if _, err := LoadCRD(crd, "v2"); err == nil {
		t.Errorf("LoadCRD of a missing version succeeded")
	}
	if _, err := LoadCRD([]byte("apiVersion: v1\nkind: ConfigMap\n"), "v1"); err == nil {
		t.Errorf("LoadCRD of a ConfigMap succeeded")
	}
}
