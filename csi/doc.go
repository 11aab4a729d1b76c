// Package csi serves the Container Storage Interface for blobfs (`blobfs
// csi`), so Kubernetes can provision ReadWriteMany volumes from a
// StorageClass and mount them into pods: shared mounts and cache per node,
// per-pod workload identity, mounts that survive the driver.
//
// # Shape
//
// Three small services, each validating its request first and answering
// with gRPC codes (InvalidArgument for anything the caller must fix,
// naming the bad key and never a secret's value; Aborted while another
// call works on the same volume; NotFound, AlreadyExists and
// FailedPrecondition as the spec assigns them):
//
//   - Identity: name DriverName ("blobfs.csi.azure.io"), CONTROLLER_SERVICE,
//     and a Probe that reflects health (node: the mount supervisor answers
//     and can open /dev/fuse; controller: storage answers, when a default
//     account is configured).
//   - Controller: CreateVolume provisions a container per PVC (or a prefix
//     of a shared container), DeleteVolume deletes only what the driver
//     created, ValidateVolumeCapabilities. Storage is reached through
//     ContainerAdmin (satisfied by azstore.Containers).
//   - Node: stage, publish, unpublish, unstage, stats, info. It changes the
//     mount table only through a Mounter, so it is tested without root
//     (a fake) and without FUSE (a stand-in that bind-mounts a directory).
//
// There is no driver struct holding everything: Services groups the
// three for Serve.
//
// # Volume ids
//
// blobfs#<account>#<container>[#<prefix>[#owned]] — see VolumeID. The
// "owned" flag marks a container CreateVolume made for that one volume;
// it is the only thing DeleteVolume ever deletes. Static PVs may use such
// an id as volumeHandle ("blobfs#mydata#datasets"), or, as with
// blob-csi-driver, any unique handle plus volumeAttributes.containerName.
//
// # Node: one mount per volume per node
//
// NodeStageVolume makes one FUSE mount at the staging path; each
// NodePublishVolume bind-mounts it at the pod's target (read-only with
// MS_BIND|MS_REMOUNT|MS_RDONLY when the pod or the access mode asks). All
// pods on a node share one mount, one kernel page cache and the node's
// block cache.
//
// Per-pod workload identity (volume attribute
// mountWithWorkloadIdentityToken: "true", with clientID and tenantID):
// the pod's federated token arrives only in NodePublishVolume
// (csi.storage.k8s.io/serviceAccount.tokens), so the mount is made there,
// under the state directory, keyed by (volume, namespace, service account,
// client id, tenant) and shared by pods with that identity. Each publish —
// kubelet republishes periodically with requiresRepublish: true — rewrites
// the identity's 0600 token file atomically; the mount's credential
// re-reads it at each refresh. Pods that want a repaired mount to reach
// them without a restart should mount the volume with mountPropagation:
// HostToContainer.
//
// # Mounts survive the driver
//
// The FUSE processes run in the mount supervisor (`blobfs csi --mode
// mounter`), a second container of the node DaemonSet's pod, which the node
// plugin asks over a unix socket; see supervisor.go for the choice and its
// limits. A mount whose process died answers ENOTCONN: the supervisor
// remounts such mounts at its start-up from their stored settings, and a
// publish that finds its staging (or identity) mount stale repairs it
// (lazy unmount, mount) before binding. Both sides re-discover their
// mounts at start-up from their state directory and /proc/self/mountinfo.
//
// # Attributes, secrets, mount options
//
// Volume attributes (PV volumeAttributes or StorageClass parameters, keys
// case-insensitive): storageAccount, containerName, subDir or prefix,
// containerNamePrefix (StorageClass), protocol (fuse or fuse2; nfs is
// refused), clientID, tenantID, AzureStorageAuthType,
// AzureStorageIdentityClientID, AzureStorageIdentityResourceID,
// AzureStorageSPNClientID, AzureStorageSPNTenantID,
// mountWithWorkloadIdentityToken, storageEndpointSuffix, endpoint (needs
// --allow-custom-endpoints), and blobfs's own blockSizeMB, cacheSizeMB,
// prefetch, umask, uid, gid. resourceGroup and subscriptionID are accepted
// and ignored; anything else is refused.
//
// Node-stage secrets: azurestorageaccountname, azurestorageaccountkey,
// azurestorageaccountsastoken, azurestoragespnclientsecret.
//
// mountOptions (VolumeCapability.Mount.MountFlags) go through an allowlist
// into config.Mount: FUSE options allow_other, ro, rw, uid=, gid=, umask=,
// attr_timeout=, entry_timeout=, negative_timeout=, direct_io, nonempty,
// default_permissions (as "-o a,b", "-oa" or bare "ro"); BlobFuse2 flags
// --read-only, --allow-other, --attr-timeout, --entry-timeout,
// --negative-timeout, --attr-cache-timeout, --use-attr-cache,
// --file-cache-timeout[-in-seconds], --cache-size-mb, --block-cache,
// --block-cache-{block-size,pool-size,disk-size,prefetch,parallelism},
// --log-level, --direct-io, --ignore-interrupts, --no-symlinks, --uid, --gid, --umask,
// --virtual-directory, --disable-writeback-cache, --ignore-open-flags,
// --cancel-list-on-mount-seconds. Options that choose paths or another
// container (--config-file, --tmp-path, --block-cache-path,
// --container-name, ...) are refused.
//
// # Permissions and non-root pods
//
// Mounts default to allow_other with umask 0 (files 0777, directories
// 0777), as BlobFuse2 under blob-csi-driver behaves, because Ray images run
// as uid 1000 and the mount's owner is root; the umask, uid and gid
// attributes (or mount options) tighten that. The node advertises
// VOLUME_MOUNT_GROUP: deploy the CSIDriver with fsGroupPolicy: File and
// kubelet hands the pod's fsGroup to the driver, which makes it the
// mount's gid with group read/write, instead of walking and chowning every
// blob (hours on a large container). fsGroupPolicy: None also works and
// ignores fsGroup altogether. Pods sharing a staged volume on one node
// must agree on the fsGroup (or the volume sets gid explicitly).
//
// # CSIDriver and deployment
//
//	attachRequired: false
//	podInfoOnMount: true
//	fsGroupPolicy: File
//	requiresRepublish: true
//	tokenRequests: [{audience: api://AzureADTokenExchange}]
//	volumeLifecycleModes: [Persistent]
//
// The node DaemonSet pod runs the node plugin (--mode node) and the mount
// supervisor (--mode mounter), both privileged, both mounting the kubelet
// directory with mountPropagation: Bidirectional, /dev/fuse, and the state
// directory (--state-dir, default /var/lib/kubelet/plugins/<driver name>,
// which also holds the supervisor socket) at the same path; the supervisor
// also mounts the node cache (--cache-dir). The daemonized mount processes
// are re-parented to the mounter container's PID 1; the supervisor reaps
// them when it is PID 1 itself (run it directly, not under a shell).
package csi
