package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blobfs/blobfs/internal/bootstrap"
)

var bootFlags = []string{"bootstrap", "--account", "acct1", "--container", "data",
	"--client-id", "11111111-2222-3333-4444-555555555555", "--tenant-id", "66666666-7777-8888-9999-000000000000"}

func withArgs(base []string, extra ...string) []string {
	return append(append([]string{}, base...), extra...)
}

const bootConfig = `
tenantID: 66666666-7777-8888-9999-000000000000
clientID: 11111111-2222-3333-4444-555555555555
container: datasets
namespace: from-file
resourceGroup: rg1
clusters:
  - name: westeurope
    account: dataweu
  - name: eastus
    account: dataeus
    gpuWorkers: 8
`

func TestBootstrapToStdout(t *testing.T) {
	code, out, errOut := execute(t, nil, withArgs(bootFlags, "--namespace", "ray-train", "--gpu-workers", "4", "--image", "registry.example/blobfs:v2")...)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, bootstrap.Header) {
		t.Errorf("stdout does not start with the header")
	}
	for _, want := range []string{
		"kind: Namespace", "kind: ServiceAccount", "kind: PersistentVolume\n", "kind: PersistentVolumeClaim",
		"kind: RayCluster", "kind: RayJob", "namespace: ray-train", "replicas: 4",
		"azure.workload.identity/client-id: 11111111-2222-3333-4444-555555555555",
		"volumeHandle: blobfs#acct1#data\n", "image: registry.example/blobfs:v2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if strings.Contains(out, "az ") {
		t.Errorf("az commands in the YAML stream without --print-az")
	}
	// Same flags, same bytes.
	_, again, _ := execute(t, nil, withArgs(bootFlags, "--namespace", "ray-train", "--gpu-workers", "4", "--image", "registry.example/blobfs:v2")...)
	if again != out {
		t.Errorf("two runs with the same flags differ")
	}
}

func TestBootstrapPrintAz(t *testing.T) {
	code, out, errOut := execute(t, nil, withArgs(bootFlags, "--print-az", "--resource-group", "ml-rg", "--aks-cluster", "ray-aks",
		"--namespace", "ray-train", "--service-account", "trainer")...)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "apiVersion:") {
		t.Errorf("--print-az without -o printed manifests too; stdout must be only the script")
	}
	for _, want := range []string{"#!/bin/sh", "az aks update --resource-group ml-rg --name ray-aks",
		"--subject system:serviceaccount:ray-train:trainer", "az role assignment create"} {
		if !strings.Contains(out, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	code, _, errOut = execute(t, nil, withArgs(bootFlags, "--print-az")...)
	if code != ExitUsage || !strings.Contains(errOut, "--resource-group") {
		t.Errorf("--print-az without a resource group: exit %d, %s", code, errOut)
	}
}

func TestBootstrapConfigFileDirectories(t *testing.T) {
	cfg := writeFile(t, "clusters.yaml", bootConfig)
	out := filepath.Join(t.TempDir(), "out")
	// A flag beats the file for every cluster; the file beats flag defaults.
	code, stdout, errOut := execute(t, nil, "bootstrap", "--config-file", cfg, "-o", out, "--print-az", "--ray-version", "2.50.1")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, c := range []struct{ name, account, workers string }{{"westeurope", "dataweu", "replicas: 1\n"}, {"eastus", "dataeus", "replicas: 8\n"}} {
		for _, f := range []string{bootstrap.FileNamespace, bootstrap.FileStorage, bootstrap.FileRayCluster, bootstrap.FileRayJob} {
			if _, err := os.Stat(filepath.Join(out, c.name, f)); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
		storage, _ := os.ReadFile(filepath.Join(out, c.name, bootstrap.FileStorage))
		if !strings.Contains(string(storage), "volumeHandle: blobfs#"+c.account+"#datasets\n") || !strings.Contains(string(storage), "namespace: from-file") {
			t.Errorf("%s storage does not use its account %s and the file's namespace:\n%s", c.name, c.account, storage)
		}
		rc, _ := os.ReadFile(filepath.Join(out, c.name, bootstrap.FileRayCluster))
		if !strings.Contains(string(rc), c.workers) || !strings.Contains(string(rc), "rayVersion: 2.50.1") {
			t.Errorf("%s RayCluster lacks %q or the flag's rayVersion", c.name, c.workers)
		}
	}
	if !strings.Contains(stdout, "--name westeurope --enable-oidc-issuer") || !strings.Contains(stdout, "--name eastus --enable-oidc-issuer") {
		t.Errorf("az script does not cover both clusters:\n%s", stdout)
	}

	// Several clusters cannot go to one stdout stream ...
	code, _, errOut = execute(t, nil, "bootstrap", "--config-file", cfg)
	if code != ExitUsage || !strings.Contains(errOut, "lists 2 clusters: give -o DIR") {
		t.Errorf("two clusters to stdout: exit %d, %s", code, errOut)
	}
	// ... but one of them can.
	code, one, errOut := execute(t, nil, "bootstrap", "--config-file", cfg, "--cluster", "eastus")
	if code != ExitOK || !strings.Contains(one, "blobfs#dataeus#datasets") || strings.Contains(one, "dataweu") {
		t.Errorf("--cluster eastus: exit %d, %s", code, errOut)
	}
	code, _, errOut = execute(t, nil, "bootstrap", "--config-file", cfg, "--cluster", "mars")
	if code != ExitUsage || !strings.Contains(errOut, "it has westeurope, eastus") {
		t.Errorf("--cluster mars: exit %d, %s", code, errOut)
	}
}

func TestBootstrapErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown config key", []string{"bootstrap", "--config-file", writeFile(t, "c.yaml", "acount: x\n")}, ExitUsage,
			"line 1: field acount not found"},
		{"bad config value", []string{"bootstrap", "--config-file", writeFile(t, "c.yaml", strings.Replace(bootConfig, "account: dataeus", "account: Data-EUS", 1))},
			ExitUsage, `clusters[1] (eastus): account: "Data-EUS"`},
		{"missing config file", []string{"bootstrap", "--config-file", "/nonexistent/clusters.yaml"}, ExitError, "no such file"},
		{"--cluster without a config", withArgs(bootFlags, "--cluster", "x"), ExitUsage, "--cluster picks one cluster"},
		{"bad flag value", withArgs(bootFlags, "--prefetch-path", "/etc"), ExitUsage, `prefetchPath: "/etc"`},
		{"bad image", withArgs(bootFlags, "--image", "not an image"), ExitUsage, "image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := execute(t, nil, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, errOut)
			}
			if out != "" {
				t.Errorf("stdout %q on error", out)
			}
		})
	}
	// The unknown key's line is named.
	_, _, errOut := execute(t, nil, "bootstrap", "--config-file", writeFile(t, "c.yaml", "account: a\nacount: x\n"))
	if !strings.Contains(errOut, "line 2: field acount not found") {
		t.Errorf("unknown key: %s", errOut)
	}
}
