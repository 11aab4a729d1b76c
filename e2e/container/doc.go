// Package containere2e runs blobfs the way a Kubernetes node does: from
// the image built by deploy/Dockerfile, inside real containers with only
// CAP_SYS_ADMIN and /dev/fuse, FUSE mounts reaching the host through
// shared mount propagation.
//
// The tests start their own Docker engine (dockerd from Debian's docker.io,
// which scripts/setup.sh installs) with its own data root, exec root and
// socket under a temporary directory, no bridge and no iptables, and stop it
// at the end; containers use the host network to reach Azurite on
// loopback. No registry is needed: the image is FROM scratch. They skip
// only where FUSE mounts are impossible (not root, no /dev/fuse); a missing
// dockerd is a failure, because setup.sh installs it.
package containere2e
