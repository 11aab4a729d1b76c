// Package kubee2e checks blobfs's Kubernetes manifests against a real
// control plane: etcd and kube-apiserver built from the Go module proxy by
// scripts/kube-tools.sh (into .tools/kube), started on loopback ports for
// each test and always stopped. There is no kubelet, scheduler or
// controller-manager: nothing runs, and what is tested is what the API
// server admits, validates and stores — the Helm chart (helm install), the
// KubeRay CRDs, everything `blobfs bootstrap` renders, and broken
// manifests it must reject.
//
// The binaries are required, not optional: scripts/setup.sh (make deps)
// builds them, so a missing one fails the tests instead of skipping them.
package kubee2e
