package bootstrap

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func azClusters(t *testing.T) []Settings {
	t.Helper()
	c, err := ParseConfig([]byte(twoRegions + "identityResourceGroup: ml-shared\n"))
	if err != nil {
		t.Fatal(err)
	}
	clusters, err := Resolve(c, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	return clusters
}

// TestAzScriptPerCluster: each cluster gets its OIDC issuer, a federated
// credential whose subject is its pods' service account and whose issuer
// is its own AKS cluster, and least-privilege roles on its own account;
// shared things appear once.
func TestAzScriptPerCluster(t *testing.T) {
	clusters := azClusters(t)
	if _, err := AzScript(clusters); err == nil || !strings.Contains(err.Error(), "identity ml-shared/ray-blobfs has client id") {
		t.Errorf("two client ids for one identity name: err = %v", err)
	}
	clusters[1].IdentityName = "ray-blobfs-eus"                         // eastus's own identity (its own client id)
	clusters[1].Namespace, clusters[1].ServiceAccount = "ml", "trainer" // and a different subject
	script, err := AzScript(clusters)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"az aks update --resource-group ml-weu --name westeurope --enable-oidc-issuer --enable-workload-identity",
		"az aks update --resource-group ml-eus --name eastus --enable-oidc-issuer --enable-workload-identity",
		"--subject system:serviceaccount:ray:ray --audiences api://AzureADTokenExchange",
		"--subject system:serviceaccount:ml:trainer --audiences api://AzureADTokenExchange",
		`--issuer "$(az aks show --resource-group ml-weu --name westeurope --query oidcIssuerProfile.issuerUrl --output tsv)"`,
		`--issuer "$(az aks show --resource-group ml-eus --name eastus --query oidcIssuerProfile.issuerUrl --output tsv)"`,
		"--name westeurope-ray-ray", "--name eastus-ml-trainer",
		"az storage container-rm create --storage-account dataweu --name checkpoints",
		"az storage container-rm create --storage-account dataeus --name checkpoints",
		"--role 'Storage Blob Data Reader'",
		`--scope "$(az storage account show --name dataweu --query id --output tsv)/blobServices/default/containers/datasets"`,
		`--scope "$(az storage account show --name dataeus --query id --output tsv)/blobServices/default/containers/checkpoints"`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if n := strings.Count(script, "az identity create "); n != 2 {
		t.Errorf("identity created %d times, want once per identity", n)
	}
	if n := strings.Count(script, "az identity federated-credential create "); n != 2 {
		t.Errorf("%d federated credentials, want one per cluster", n)
	}
	if !strings.Contains(script, "--resource-group ml-shared --identity-name ray-blobfs-eus \\\n  --name eastus-ml-trainer") {
		t.Errorf("eastus's federated credential is not on its own identity")
	}
	for _, block := range strings.Split(script, "\n\n") {
		if strings.Contains(block, "az role assignment create") && strings.Contains(block, "containers/datasets\"") &&
			!strings.Contains(block, "'"+RoleReader+"'") {
			t.Errorf("the dataset container gets more than read access; it is read-only in the pods:\n%s", block)
		}
	}
	if n := strings.Count(script, "--role '"+RoleContributor+"'"); n != 2 {
		t.Errorf("%d contributor assignments, want one per account's checkpoint container", n)
	}
	if !strings.Contains(script, "test \"$(az identity show --resource-group ml-shared --name ray-blobfs --query clientId --output tsv)\" = "+testClient) ||
		!strings.Contains(script, "test \"$(az identity show --resource-group ml-shared --name ray-blobfs-eus --query clientId --output tsv)\" = aaaaaaaa-2222-3333-4444-555555555555") {
		t.Errorf("script does not check the identity's client id against the manifests'")
	}
	if strings.Contains(script, "--subscription") {
		t.Errorf("--subscription without a subscription set")
	}

	// It is a valid sh script.
	if sh, err := exec.LookPath("sh"); err == nil {
		p := filepath.Join(t.TempDir(), "az.sh")
		if err := os.WriteFile(p, []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(sh, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n: %v\n%s", err, out)
		}
	}
}

func TestAzScriptSharedEverything(t *testing.T) {
	clusters := azClusters(t)
	for i := range clusters {
		clusters[i].Account, clusters[i].ClientID = "shared1", testClient
		clusters[i].Subscription = "99999999-8888-7777-6666-555555555555"
	}
	script, err := AzScript(clusters)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(script, "az role assignment create "); n != 2 {
		t.Errorf("%d role assignments for one identity on one account, want 2 (reader on the dataset, contributor on checkpoints)", n)
	}
	if n := strings.Count(script, "az storage container-rm create "); n != 1 {
		t.Errorf("checkpoint container created %d times, want once", n)
	}
	if n := strings.Count(script, "az identity federated-credential create "); n != 2 {
		t.Errorf("%d federated credentials, want one per cluster even with one identity", n)
	}
	if n := strings.Count(script, "--subscription 99999999-8888-7777-6666-555555555555"); n < 10 {
		t.Errorf("subscription on %d commands; every az command needs it", n)
	}
}

func TestAzScriptNeedsResourceGroup(t *testing.T) {
	s := testSettings()
	_, err := AzScript([]Settings{s})
	if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--resource-group") || !strings.Contains(err.Error(), "--aks-cluster") {
		t.Errorf("err = %v, want one naming --resource-group and --aks-cluster", err)
	}
	s.ResourceGroup, s.AKSCluster = "rg (ml)", "aks1"
	script, err := AzScript([]Settings{s})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(script, "--resource-group 'rg (ml)' --name aks1") {
		t.Errorf("a resource group with spaces and parentheses is not quoted:\n%s", script)
	}
}

// TestAzScriptSameContainer: dataset and checkpoints in one container get
// one contributor assignment, no reader.
func TestAzScriptSameContainer(t *testing.T) {
	s := testSettings()
	s.ResourceGroup, s.AKSCluster = "rg", "aks"
	s.CheckpointContainer, s.DatasetPrefix, s.CheckpointPrefix = s.Container, "data", "ckpt"
	script, err := AzScript([]Settings{s})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(script, "az role assignment create ") != 1 || strings.Contains(script, "Data Reader") {
		t.Errorf("want exactly one contributor assignment:\n%s", script)
	}
}
