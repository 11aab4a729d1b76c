#!/bin/sh
# Rendered by `blobfs bootstrap --print-az`: the Azure resources Kubernetes cannot
# create. blobfs never runs these; read them, then run them with an az login
# that may create identities and assign roles (Owner or User Access
# Administrator on the storage accounts). Re-running is safe: every command
# creates or updates the same thing.
set -eu

# ---- AKS cluster ray-westeurope (westeurope), namespace ray ----

# OIDC issuer and the workload identity webhook.
az aks update --resource-group ml-westeurope --name ray-westeurope --enable-oidc-issuer --enable-workload-identity

# The pods' user-assigned managed identity; its client id must be the one the
# manifests carry (11111111-2222-3333-4444-555555555555).
az identity create --resource-group ml-westeurope --name ray-blobfs --location westeurope
test "$(az identity show --resource-group ml-westeurope --name ray-blobfs --query clientId --output tsv)" = 11111111-2222-3333-4444-555555555555 ||
  { echo 'identity ml-westeurope/ray-blobfs does not have client id 11111111-2222-3333-4444-555555555555: render with its client id' >&2; exit 1; }

# Trust this cluster's service account tokens (subject system:serviceaccount:ray:ray).
az identity federated-credential create --resource-group ml-westeurope --identity-name ray-blobfs \
  --name ray-westeurope-ray-ray \
  --issuer "$(az aks show --resource-group ml-westeurope --name ray-westeurope --query oidcIssuerProfile.issuerUrl --output tsv)" \
  --subject system:serviceaccount:ray:ray --audiences api://AzureADTokenExchange

# The checkpoint container (the dataset container must exist already).
az storage container-rm create --storage-account mltrainingweu --name checkpoints

# Storage Blob Data Reader on mltrainingweu/datasets.
az role assignment create --role 'Storage Blob Data Reader' \
  --assignee-object-id "$(az identity show --resource-group ml-westeurope --name ray-blobfs --query principalId --output tsv)" \
  --assignee-principal-type ServicePrincipal \
  --scope "$(az storage account show --name mltrainingweu --query id --output tsv)/blobServices/default/containers/datasets"

# Storage Blob Data Contributor on mltrainingweu/checkpoints.
az role assignment create --role 'Storage Blob Data Contributor' \
  --assignee-object-id "$(az identity show --resource-group ml-westeurope --name ray-blobfs --query principalId --output tsv)" \
  --assignee-principal-type ServicePrincipal \
  --scope "$(az storage account show --name mltrainingweu --query id --output tsv)/blobServices/default/containers/checkpoints"
