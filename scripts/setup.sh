#!/usr/bin/env bash
# setup.sh — install what blobfs's build, tests, demo and benchmarks need on a
# Debian machine (`make deps` runs it; so does .ci/run). Idempotent: when
# everything is in place it changes nothing and takes a few seconds.
#
#   Debian packages  fuse3 (fusermount3, /etc/fuse.conf), fio, rsync (e2e/mount); gcc for go test -race;
#                    docker.io (e2e/container; its service is not started)
#   Node.js + npm    must already be there (Node 20+); checked, not installed
#   Azurite          azurite@3.37.0 from npm (pin: internal/azurite), into .tools/azurite
#   Go modules       go mod download
#   helm, kube-apiserver, etcd, kubectl  built from the module proxy into .tools/ (scripts/kube-tools.sh)
#
# apt-get update runs only when a package is missing and the package lists
# are absent or stale. Needs root (or sudo) only when installing packages.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# The pin lives in internal/azurite (const Version); 3.37.0 if it cannot be read.
pinned=$(sed -n 's/^const Version = "\(.*\)"$/\1/p' internal/azurite/install.go 2>/dev/null || true)
AZURITE_VERSION=${pinned:-3.37.0}
AZURITE_DIR=$ROOT/.tools/azurite
NODE_MIN_MAJOR=20
export PATH="$PATH:/usr/local/go/bin"

start=$(date +%s)
log() { printf 'setup: %s\n' "$*" >&2; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# One setup at a time (parallel make, two terminals).
mkdir -p "$ROOT/.tools"
if command -v flock >/dev/null 2>&1; then
	exec 9>"$ROOT/.tools/.setup.lock"
	flock 9
fi

# --- Debian packages -------------------------------------------------------
pkgs=()
command -v fusermount3 >/dev/null 2>&1 || pkgs+=(fuse3)
command -v fio >/dev/null 2>&1 || pkgs+=(fio)
command -v rsync >/dev/null 2>&1 || pkgs+=(rsync) # e2e/mount: rsync -a into a mount
command -v gcc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev) # go test -race needs cgo
command -v git >/dev/null 2>&1 || pkgs+=(git)
command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io) # e2e/container starts its own dockerd (not the service)
[ -s /etc/ssl/certs/ca-certificates.crt ] || pkgs+=(ca-certificates)
if ((${#pkgs[@]})); then
	command -v apt-get >/dev/null 2>&1 || die "missing ${pkgs[*]} and no apt-get here: install them by hand"
	export DEBIAN_FRONTEND=noninteractive
	apt_install() { as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}" </dev/null; }
	log "installing Debian packages: ${pkgs[*]}"
	# docker.io's postinst would start the system dockerd (a bridge, iptables
	# rules); the tests run their own, so no service starts during the install.
	if [[ " ${pkgs[*]} " == *" docker.io "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
		as_root chmod 755 /usr/sbin/policy-rc.d
		trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		log "no package lists yet: apt-get update"
		as_root apt-get update -q </dev/null
		apt_install
	elif ! apt_install; then
		log "install failed (stale package lists?): apt-get update and retry"
		as_root apt-get update -q </dev/null
		apt_install
	fi
fi
if [ ! -e /dev/fuse ]; then
	log "warning: /dev/fuse is absent: tests that mount FUSE will skip (they need /dev/fuse and root)"
fi

# --- Go --------------------------------------------------------------------
command -v go >/dev/null 2>&1 ||
	die "Go not found (looked in PATH and /usr/local/go/bin): install Go $(sed -n 's/^go //p' go.mod) from go.dev/dl into /usr/local/go"

# --- Node.js and npm (for Azurite) ------------------------------------------
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
	die "Node.js $NODE_MIN_MAJOR+ and npm are needed to run Azurite (the Blob emulator the tests use); install them (e.g. NodeSource's nodejs $NODE_MIN_MAJOR.x) and run again"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= NODE_MIN_MAJOR)) ||
	die "Node.js $(node --version) is too old: Azurite needs Node.js $NODE_MIN_MAJOR or newer"

# --- Azurite, pinned into .tools/azurite -----------------------------------
# Same layout, marker and lock as internal/azurite's installer, so the test
# harness finds it installed and never runs npm itself. A Go installer, when
# the harness ships one, is the single source of truth and wins.
if [ -f internal/azurite/cmd/install/main.go ]; then
	go run ./internal/azurite/cmd/install
	have=$(node -p 'require(process.argv[1]).version' "$AZURITE_DIR/node_modules/azurite/package.json")
else
	azurite_pkg=$AZURITE_DIR/node_modules/azurite/package.json
	marker=$AZURITE_DIR/.blobfs-installed
	azurite_ok() {
		have=""
		[ -f "$azurite_pkg" ] && have=$(node -p 'require(process.argv[1]).version' "$azurite_pkg" 2>/dev/null || true)
		[ "$have" = "$AZURITE_VERSION" ] && [ "$(cat "$marker" 2>/dev/null)" = "$AZURITE_VERSION" ]
	}
	if ! azurite_ok; then
		mkdir -p "$AZURITE_DIR"
		exec 8>"$AZURITE_DIR.lock" # the harness's lock: one npm install at a time
		command -v flock >/dev/null 2>&1 && flock 8
		if ! azurite_ok; then
			log "installing azurite@$AZURITE_VERSION into .tools/azurite${have:+ (had $have)}"
			rm -f "$marker"
			npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --no-update-notifier \
				--loglevel=error --save-exact "azurite@$AZURITE_VERSION" </dev/null
			have=$(node -p 'require(process.argv[1]).version' "$azurite_pkg")
			[ "$have" = "$AZURITE_VERSION" ] || die "npm installed azurite $have, wanted $AZURITE_VERSION"
			echo "$AZURITE_VERSION" >"$marker"
		fi
		exec 8>&-
	fi
fi
[ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] ||
	die "azurite-blob missing from .tools/azurite/node_modules/.bin: remove .tools/azurite and run again"

# --- Go modules ------------------------------------------------------------
go mod download

# --- helm, for the chart test (deploy/chart_test.go) -------------------------
# Built from the Go module proxy (no release downloads here): about 6 min
# on a bare 2-core machine, then reused from .tools/bin.
HELM_VERSION=v3.22.0
if ! "$ROOT/.tools/bin/helm" version --short 2>/dev/null | grep -q "^${HELM_VERSION%.*}"; then
	log "installing helm $HELM_VERSION into .tools/bin (go install; a few minutes on 2 cores)"
	GOBIN="$ROOT/.tools/bin" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

# --- kube-apiserver, etcd, kubectl, for e2e/kube ----------------------------
# Built from the Go module proxy into .tools/kube (about 5+ min on a bare
# 2-core machine, once); instant when already there.
scripts/kube-tools.sh >/dev/null

log "ready in $(($(date +%s) - start))s: $(go version | cut -d' ' -f3), node $(node --version), azurite $have, fio $(fio --version 2>/dev/null | sed 's/^fio-//'), helm $("$ROOT/.tools/bin/helm" version --short 2>/dev/null)"
