package bootstrap

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Azure built-in roles the pods' identity gets on the containers.
const (
	RoleReader      = "Storage Blob Data Reader"
	RoleContributor = "Storage Blob Data Contributor"
)

// AzScript returns a shell script of the az commands that create what
// Kubernetes cannot, for every cluster: the OIDC issuer and workload
// identity on each AKS cluster, the managed identity, one federated
// credential per cluster (each AKS cluster has its own issuer) with the
// pods' service account as subject, the checkpoint container, and role
// assignments scoped to the containers (read-only on the dataset,
// read-write on the checkpoints). blobfs never runs it.
//
// Commands shared by several clusters (one identity, one storage account)
// appear once. It needs resourceGroup and a cluster name (aksCluster or
// name) for every cluster.
func AzScript(clusters []Settings) (string, error) {
	var errs []error
	for i, s := range clusters {
		var missing []string
		if s.ResourceGroup == "" {
			missing = append(missing, "resourceGroup (--resource-group)")
		}
		if s.aksCluster() == "" {
			missing = append(missing, "aksCluster (--aks-cluster)")
		}
		if len(missing) > 0 {
			who := ""
			if len(clusters) > 1 || s.Name != "" {
				who = fmt.Sprintf("cluster %d (%s): ", i, s.Name)
			}
			errs = append(errs, fmt.Errorf("%s--print-az needs %s: %w", who, strings.Join(missing, " and "), ErrConfig))
		}
	}
	// One identity (resource group + name) has one client id; two clusters
	// naming it with different ones would render manifests for an
	// identity the script never checks.
	clientOf := map[string]string{}
	for _, s := range clusters {
		key := s.Subscription + "/" + s.identityResourceGroup() + "/" + s.IdentityName
		if c, ok := clientOf[key]; ok && c != s.ClientID {
			errs = append(errs, fmt.Errorf("identity %s/%s has client id %s in one cluster and %s in another: give each client id its own identityName: %w",
				s.identityResourceGroup(), s.IdentityName, c, s.ClientID, ErrConfig))
		}
		clientOf[key] = s.ClientID
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}

	var b strings.Builder
	b.WriteString(`#!/bin/sh
# Rendered by ` + "`blobfs bootstrap --print-az`" + `: the Azure resources Kubernetes cannot
# create. blobfs never runs these; read them, then run them with an az login
# that may create identities and assign roles (Owner or User Access
# Administrator on the storage accounts). Re-running is safe: every command
# creates or updates the same thing.
set -eu
`)
	done := map[string]bool{} // commands already written
	once := func(key string) bool {
		if done[key] {
			return false
		}
		done[key] = true
		return true
	}
	for _, s := range clusters {
		sub := ""
		if s.Subscription != "" {
			sub = " --subscription " + s.Subscription
		}
		rg, aks := q(s.ResourceGroup), q(s.aksCluster())
		idRG, idName := q(s.identityResourceGroup()), q(s.IdentityName)
		title := s.aksCluster()
		if s.Region != "" {
			title += " (" + s.Region + ")"
		}
		fmt.Fprintf(&b, "\n# ---- AKS cluster %s, namespace %s ----\n", title, s.Namespace)
		fmt.Fprintf(&b, "\n# OIDC issuer and the workload identity webhook.\n")
		fmt.Fprintf(&b, "az aks update%s --resource-group %s --name %s --enable-oidc-issuer --enable-workload-identity\n", sub, rg, aks)

		idKey := s.Subscription + "/" + s.identityResourceGroup() + "/" + s.IdentityName
		if once("identity " + idKey) {
			loc := ""
			if s.Region != "" {
				loc = " --location " + s.Region
			}
			fmt.Fprintf(&b, "\n# The pods' user-assigned managed identity; its client id must be the one the\n# manifests carry (%s).\n", s.ClientID)
			fmt.Fprintf(&b, "az identity create%s --resource-group %s --name %s%s\n", sub, idRG, idName, loc)
			fmt.Fprintf(&b, "test \"$(az identity show%s --resource-group %s --name %s --query clientId --output tsv)\" = %s ||\n"+
				"  { echo 'identity %s/%s does not have client id %s: render with its client id' >&2; exit 1; }\n",
				sub, idRG, idName, s.ClientID, s.identityResourceGroup(), s.IdentityName, s.ClientID)
		}
		fcName := federatedCredentialName(s)
		if once("fc " + idKey + "/" + fcName) {
			fmt.Fprintf(&b, "\n# Trust this cluster's service account tokens (subject %s).\n", s.FederatedSubject())
			fmt.Fprintf(&b, "az identity federated-credential create%s --resource-group %s --identity-name %s \\\n"+
				"  --name %s \\\n"+
				"  --issuer \"$(az aks show%s --resource-group %s --name %s --query oidcIssuerProfile.issuerUrl --output tsv)\" \\\n"+
				"  --subject %s --audiences %s\n",
				sub, idRG, idName, fcName, sub, rg, aks, s.FederatedSubject(), TokenAudience)
		}

		if once("container " + s.Subscription + "/" + s.Account + "/" + s.CheckpointContainer) {
			fmt.Fprintf(&b, "\n# The checkpoint container (the dataset container must exist already).\n")
			fmt.Fprintf(&b, "az storage container-rm create%s --storage-account %s --name %s\n", sub, s.Account, s.CheckpointContainer)
		}
		for _, ra := range roleAssignments(s) {
			if !once("role " + idKey + "/" + s.Account + "/" + ra.container + "/" + ra.role) {
				continue
			}
			fmt.Fprintf(&b, "\n# %s on %s/%s.\n", ra.role, s.Account, ra.container)
			fmt.Fprintf(&b, "az role assignment create%s --role %s \\\n"+
				"  --assignee-object-id \"$(az identity show%s --resource-group %s --name %s --query principalId --output tsv)\" \\\n"+
				"  --assignee-principal-type ServicePrincipal \\\n"+
				"  --scope \"$(az storage account show%s --name %s --query id --output tsv)/blobServices/default/containers/%s\"\n",
				sub, q(ra.role), sub, idRG, idName, sub, s.Account, ra.container)
		}
	}
	return b.String(), nil
}

type roleAssignment struct{ container, role string }

// roleAssignments grants the least the pods need: read on the dataset
// container, read-write on the checkpoint container (write wins when the
// two are one container).
func roleAssignments(s Settings) []roleAssignment {
	if s.Container == s.CheckpointContainer {
		return []roleAssignment{{s.Container, RoleContributor}}
	}
	return []roleAssignment{{s.Container, RoleReader}, {s.CheckpointContainer, RoleContributor}}
}

// federatedCredentialName names the federated credential of one cluster's
// service account: unique per identity (3-120 letters, digits, '-', '_').
func federatedCredentialName(s Settings) string {
	n := s.aksCluster() + "-" + s.Namespace + "-" + s.ServiceAccount
	if len(n) > 120 {
		n = n[:120]
	}
	return n
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=@+-]+$`)

// q quotes a word for sh when it needs it.
func q(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
