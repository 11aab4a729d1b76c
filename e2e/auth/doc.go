// Package authe2e holds issue #4's end-to-end auth tests: the real blobfs
// binary, mounted as a daemon through the kernel's FUSE driver over an
// Azurite started with HTTPS and `--oauth basic`, authenticating through
// the Entra ID / managed identity stand-in (auth/entratest), all on
// loopback. Workload identity with short tokens, token file rotation,
// revocation and recovery, the other auth modes, and no secret in the
// daemon's log or command line. They need root and /dev/fuse and skip
// with a clear message without them.
//
//	go test ./e2e/auth
package authe2e
