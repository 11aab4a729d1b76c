package bootstrap

import (
	"errors"
	"strings"
	"testing"
)

const twoRegions = `
tenantID: 66666666-7777-8888-9999-000000000000
clientID: 11111111-2222-3333-4444-555555555555
container: datasets
gpuWorkers: 2
gpuNodeSelector: {agentpool: gpu}
clusters:
  - name: westeurope
    region: westeurope
    resourceGroup: ml-weu
    account: dataweu
  - name: eastus
    region: eastus
    resourceGroup: ml-eus
    account: dataeus
    gpuWorkers: 8
    clientID: aaaaaaaa-2222-3333-4444-555555555555
`

func TestResolveMergesDefaultsConfigAndFlags(t *testing.T) {
	c, err := ParseConfig([]byte(twoRegions))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Resolve(c, Settings{Image: "registry.example/blobfs:v9"}) // a flag
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d clusters, want 2", len(got))
	}
	weu, eus := got[0], got[1]
	for _, tc := range []struct{ what, got, want string }{
		{"weu account (its own)", weu.Account, "dataweu"},
		{"eus account (its own)", eus.Account, "dataeus"},
		{"weu container (shared)", weu.Container, "datasets"},
		{"weu client (shared)", weu.ClientID, testClient},
		{"eus client (its own)", eus.ClientID, "aaaaaaaa-2222-3333-4444-555555555555"},
		{"weu namespace (default)", weu.Namespace, "ray"},
		{"eus image (flag)", eus.Image, "registry.example/blobfs:v9"},
		{"weu node selector (shared)", weu.GPUNodeLabels["agentpool"], "gpu"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.what, tc.got, tc.want)
		}
	}
	if weu.GPUWorkers != 2 || eus.GPUWorkers != 8 {
		t.Errorf("gpu workers %d/%d, want 2 (shared) and 8 (own)", weu.GPUWorkers, eus.GPUWorkers)
	}
	// A flag beats a cluster's own value too.
	got, err = Resolve(c, Settings{GPUWorkers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got[1].GPUWorkers != 3 {
		t.Errorf("flag --gpu-workers 3 lost to the cluster's 8")
	}
	// No config: one cluster from defaults and flags.
	got, err = Resolve(nil, Settings{Account: "acct1", Container: "data", ClientID: testClient, TenantID: testTenant})
	if err != nil || len(got) != 1 || got[0].Account != "acct1" || got[0].RayClusterName != "ray" {
		t.Errorf("Resolve without config = %+v, %v", got, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key names its line", "account: a\nacount: b\n", []string{"line 2", "field acount not found"}},
		{"unknown key in a cluster", "clusters:\n  - name: a\n    regoin: x\n", []string{"line 3", "field regoin not found"}},
		{"wrong type", "gpuWorkers: four\n", []string{"line 1", "cannot unmarshal", "four"}},
		{"duplicate key", "account: a\naccount: b\n", []string{"already", "account"}},
		{"two documents", "account: a\n---\naccount: b\n", []string{"more than one YAML document"}},
		{"empty", "", []string{"empty"}},
		{"explicit zero is not 'inherit'", "gpuWorkers: 2\nclusters:\n  - name: a\n    gpuWorkers: 0\n", []string{"clusters[0]: gpuWorkers: 0: must be at least 1"}},
		{"not a map", "- a\n- b\n", []string{"cannot unmarshal"}},
		{"name at the top with clusters", "name: x\nclusters:\n  - name: a\n", []string{"set it in each entry"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error does not wrap ErrConfig: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestResolveReportsEveryBadValue(t *testing.T) {
	bad := strings.NewReplacer(
		"account: dataeus", "account: Data_EUS",
		"gpuWorkers: 8", "gpuWorkers: 20000",
		"name: westeurope", "name: West_Europe",
	).Replace(twoRegions) + "workerMemory: lots\nprefetchPath: /etc\ncheckpointContainer: datasets\n"
	c, err := ParseConfig([]byte(bad))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(c, Settings{})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`clusters[0] (West_Europe): name: "West_Europe": want a DNS label`,
		`clusters[1] (eastus): account: "Data_EUS"`,
		`clusters[1] (eastus): gpuWorkers: 20000: must be between 1 and 10000`,
		`workerMemory: "lots": want a positive Kubernetes quantity`,
		`prefetchPath: "/etc": must be /mnt/data or a path under it`,
		// Dataset = whole container, checkpoints in the same container.
		`checkpointPrefix: the checkpoints (datasets/) must not lie inside the dataset`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if !errors.Is(err, ErrConfig) {
		t.Errorf("error does not wrap ErrConfig")
	}

	dup := strings.Replace(twoRegions, "name: eastus", "name: westeurope", 1)
	c, _ = ParseConfig([]byte(dup))
	if _, err := Resolve(c, Settings{}); err == nil || !strings.Contains(err.Error(), `name "westeurope" appears twice`) {
		t.Errorf("duplicate cluster names: %v", err)
	}
	noName := strings.Replace(twoRegions, "  - name: eastus\n    region", "  - region", 1)
	c, err = ParseConfig([]byte(noName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(c, Settings{}); err == nil || !strings.Contains(err.Error(), "clusters[1]: name: required") {
		t.Errorf("cluster without a name: %v", err)
	}
}

func TestValidateSettings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Settings)
		want   string // "" = valid
	}{
		{"defaults plus storage and identity", func(*Settings) {}, ""},
		{"disjoint prefixes in one container", func(s *Settings) {
			s.CheckpointContainer, s.DatasetPrefix, s.CheckpointPrefix = s.Container, "data", "ckpt"
		}, ""},
		{"checkpoints under the dataset", func(s *Settings) {
			s.CheckpointContainer, s.DatasetPrefix, s.CheckpointPrefix = s.Container, "data", "data/ckpt"
		}, "must not lie inside the dataset"},
		{"prefix with ..", func(s *Settings) { s.DatasetPrefix = "a/../b" }, "datasetPrefix"},
		{"prefix with trailing slash", func(s *Settings) { s.DatasetPrefix = "a/" }, "datasetPrefix"},
		{"container name", func(s *Settings) { s.Container = "Data" }, "container"},
		{"tenant not a GUID", func(s *Settings) { s.TenantID = "contoso.onmicrosoft.com" }, "tenantID"},
		{"namespace", func(s *Settings) { s.Namespace = "Ray" }, "namespace"},
		{"long ray cluster name", func(s *Settings) { s.RayClusterName = strings.Repeat("r", 41) }, "at most 40"},
		{"gpus per worker", func(s *Settings) { s.GPUsPerWorker = 17 }, "gpusPerWorker"},
		{"image with a space", func(s *Settings) { s.Image = "ghcr.io/x y" }, "image"},
		{"ray version", func(s *Settings) { s.RayVersion = "latest" }, "rayVersion"},
		{"prefetch path escaping", func(s *Settings) { s.PrefetchPath = "/mnt/data/../etc" }, "prefetchPath"},
		{"prefetch path sibling", func(s *Settings) { s.PrefetchPath = "/mnt/database" }, "prefetchPath"},
		{"subscription", func(s *Settings) { s.Subscription = "prod" }, "subscription"},
		{"resource group", func(s *Settings) { s.ResourceGroup = "rg." }, "resourceGroup"},
		{"shm size", func(s *Settings) { s.ShmSize = "-1Gi" }, "shmSize"},
		{"shm larger than the worker's memory", func(s *Settings) { s.ShmSize, s.WorkerMemory = "65Gi", "64Gi" }, "counts against the worker's limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSettings()
			tc.mutate(&s)
			err := s.Validate(false)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}
