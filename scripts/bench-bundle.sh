#!/usr/bin/env bash
# bench-bundle.sh packs what `make bench` needs into one directory (about
# 52 MB), so the benchmark runs on a machine that has no Go toolchain, no
# npm and no network: a GPU node, say, with more cores than CI has.
#
#   scripts/bench-bundle.sh [DIR]          # here: build the bundle (default .devcarry)
#   DIR/run.sh [bench flags...]            # there, as root, from the repository root
#
# The bundle holds: node (this machine's, statically linked to libstdc++
# only) and the pinned Azurite without source maps and type declarations;
# blobfs and the bench, stripped; rclone v1.71.0 built with only the
# backends and commands the bench uses (azureblob, local, mount, version),
# which are rclone's own code; fusermount3, which rclone's mount needs.
# fio is not carried (its shared libraries are many): run.sh sets
# BLOBFS_BENCH_NO_FIO, so the sequential workloads read with the bench's
# own reader and the random ones are skipped.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$root/.devcarry}")"
rclone_version="$(sed -n 's/^RCLONE_VERSION ?= //p' "$root/Makefile")"
mkdir -p "$out"
cd "$root"

"$root/scripts/install-azurite.sh" >/dev/null
echo "azurite"
tar -C .tools --exclude='*.map' --exclude='*.d.ts' --exclude='*.d.mts' --exclude='*.d.cts' --exclude='*.md' \
  --exclude='*/browser/*' --exclude='*/react-native/*' -cf - azurite/node_modules azurite/.blobfs-installed |
  xz -T0 -6 >"$out/azurite.tar.xz"
echo "node $(node --version)"
xz -T0 -6 -c "$(command -v node)" >"$out/node.xz"

echo "blobfs, bench"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/blobfs" ./cmd/blobfs
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/bench.bin" ./bench
xz -T0 -9 -f "$out/blobfs" "$out/bench.bin"

echo "rclone $rclone_version (azureblob, local, mount, version)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/main.go" <<'EOF'
package main

import (
	_ "github.com/rclone/rclone/backend/azureblob"
	_ "github.com/rclone/rclone/backend/local"
	"github.com/rclone/rclone/cmd"
	_ "github.com/rclone/rclone/cmd/mount"
	_ "github.com/rclone/rclone/cmd/version"
)

func main() { cmd.Main() }
EOF
printf 'module rclonebench\n\ngo 1.26\n' >"$tmp/go.mod"
(cd "$tmp" && GOFLAGS=-mod=mod go get "github.com/rclone/rclone@$rclone_version" >/dev/null 2>&1 &&
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/rclone/rclone/fs.Version=$rclone_version" -o rclone .)
xz -T0 -9 -c "$tmp/rclone" >"$out/rclone.xz"
cp "$(command -v fusermount3)" "$out/fusermount3"

cat >"$out/run.sh" <<'EOF'
#!/usr/bin/env bash
# Unpacks the bundle beside it and runs the bench with the given flags.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin=/opt/blobfs-bench/bin
mkdir -p "$bin" bin .tools
xz -dc "$here/node.xz" >"$bin/node"
xz -dc "$here/rclone.xz" >"$bin/rclone"
xz -dc "$here/bench.bin.xz" >"$bin/bench"
xz -dc "$here/blobfs.xz" >bin/blobfs
cp "$here/fusermount3" "$bin/"
ln -sf fusermount3 "$bin/fusermount"
chmod +x "$bin"/* bin/blobfs
tar -C .tools -xJf "$here/azurite.tar.xz"
export PATH="$bin:$PATH" BLOBFS_BENCH_NO_FIO=1
exec "$bin/bench" -blobfs bin/blobfs -rclone "$bin/rclone" "$@"
EOF
chmod +x "$out/run.sh"
du -sh "$out"
