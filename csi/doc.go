// Package csi will serve the Container Storage Interface for blobfs, so
// Kubernetes can provision ReadWriteMany volumes from a StorageClass and
// mount them into pods (`blobfs csi`).
//
// Planned shape (issue #7): Identity, Controller and Node servers that
// validate every request first and answer with gRPC status codes; a Mounter
// interface so the node server is testable without root; per-volume locks
// that return Aborted when busy; FUSE mounts that keep serving when the
// driver restarts; per-pod workload identity tokens from NodePublishVolume.
// It is tested with csi-test's sanity suite against real mounts on Azurite.
package csi
