#!/usr/bin/env bash
# kube-tools.sh — build (once) the Kubernetes control-plane binaries the
# e2e/kube tests run: kube-apiserver, kubectl and etcd, into
# .tools/kube/$KUBE_VERSION/ (git-ignored). Prints that directory on stdout.
#
# No release downloads are reachable here, only the Go module proxy, so the
# binaries are built from source:
#   - a scratch module under .tools/kube/src/ requires k8s.io/kubernetes and
#     rewrites its ./staging/... replace directives (which only work inside a
#     kubernetes checkout) to the published k8s.io/* v0.X.Y modules;
#   - etcd comes from its own scratch module (go.etcd.io/etcd/server/v3), so
#     its dependency versions never fight kubernetes's.
# The module cache is the normal one (GOMODCACHE), so `go mod download` and
# other builds share it. About 5 minutes on 2 cores the first time; a few
# milliseconds when the binaries and their stamp are already there.
#
#   KUBE_VERSION  (default v1.36.3) k8s.io/kubernetes version; staging modules v0.<minor>.<patch>
#   ETCD_VERSION  (default v3.6.8)  go.etcd.io/etcd/server/v3 version
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$PATH:/usr/local/go/bin"
KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
OUT=$ROOT/.tools/kube/$KUBE_VERSION
SRC=$ROOT/.tools/kube/src/$KUBE_VERSION
STAMP=$OUT/.built
WANT="kubernetes $KUBE_VERSION staging $STAGING_VERSION etcd $ETCD_VERSION"

log() { printf 'kube-tools: %s\n' "$*" >&2; }
die() {
	printf 'kube-tools: error: %s\n' "$*" >&2
	exit 1
}

built() {
	[ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] &&
		[ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kubectl" ] && [ -x "$OUT/etcd" ]
}

if built; then
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "Go not found (PATH and /usr/local/go/bin)"
mkdir -p "$ROOT/.tools/kube"
# One build at a time: two test runs or two terminals wait for the first.
exec 9>"$ROOT/.tools/kube/.lock"
flock 9
if built; then
	echo "$OUT"
	exit 0
fi

start=$(date +%s)
# Not the repository's workspace or flags: these are separate modules.
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
unset GOOS GOARCH

# --- kube-apiserver and kubectl ----------------------------------------------
mkdir -p "$SRC/kubernetes"
cd "$SRC/kubernetes"
if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes $KUBE_VERSION\$" go.mod; then
	log "preparing scratch module for k8s.io/kubernetes $KUBE_VERSION (staging modules $STAGING_VERSION)"
	rm -f go.mod go.sum
	go mod init blobfs.local/kube-tools >/dev/null 2>&1
	k8smod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
	[ -f "$k8smod" ] || die "could not download k8s.io/kubernetes@$KUBE_VERSION's go.mod"
	# Every `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x v0.Y.Z`.
	{
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo "replace ("
		sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => \./staging/src/k8s.io/.*$#\t\1 => \1 '"$STAGING_VERSION"'#p' "$k8smod"
		echo ")"
	} >>go.mod
	grep -q "k8s.io/api => k8s.io/api $STAGING_VERSION" go.mod || die "no staging replace directives found in $k8smod"
fi
log "resolving kubernetes dependencies"
go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION" >/dev/null 2>&1 ||
	go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION"
# The version the binaries report (kubectl version, helm's kubeVersion checks,
# /version); without it they say v0.0.0-master.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w \
-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION \
-X k8s.io/client-go/pkg/version.gitMajor=1 \
-X k8s.io/client-go/pkg/version.gitMinor=$minor"
mkdir -p "$OUT"
rm -f "$STAMP" # written last: a build cut short is never taken for done
# One go build for both: the packages they share compile once and the two
# links run side by side.
log "building kube-apiserver and kubectl $KUBE_VERSION (about 5 minutes on 2 cores the first time)"
go build -trimpath -ldflags "$ldflags" -o "$OUT/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl

# --- etcd --------------------------------------------------------------------
mkdir -p "$SRC/etcd"
cd "$SRC/etcd"
if [ ! -f go.mod ] || ! grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION\$" go.mod; then
	rm -f go.mod go.sum
	go mod init blobfs.local/etcd-tools >/dev/null 2>&1
fi
log "building etcd $ETCD_VERSION"
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3

echo "$WANT" >"$STAMP"
log "built $WANT into ${OUT#"$ROOT"/} in $(($(date +%s) - start))s"
echo "$OUT"
