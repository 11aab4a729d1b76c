#!/usr/bin/env bash
# install-azurite.sh installs the pinned Azurite into the tools dir ahead of
# the tests (CI, or a machine that will go offline). The tests install it on
# demand anyway; this only moves the ~30 s npm install out of the first test.
# The version comes from internal/azurite/install.go, the one place it is
# pinned; the lock and the completion marker match what the Go harness uses.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^const Version = "\(.*\)"$/\1/p' "$root/internal/azurite/install.go")"
[ -n "$version" ] || { echo "install-azurite: cannot find the pinned Version" >&2; exit 1; }
tools="${BLOBFS_TOOLS_DIR:-$root/.tools}"
dir="$tools/azurite"
marker="$dir/.blobfs-installed"

mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9
if [ "$(cat "$marker" 2>/dev/null)" = "$version" ] &&
   grep -q "\"version\": *\"$version\"" "$dir/node_modules/azurite/package.json" 2>/dev/null; then
  echo "azurite $version already installed in $dir"
  exit 0
fi
echo "installing azurite $version into $dir"
npm install --prefix "$dir" --no-audit --no-fund "azurite@$version"
echo "$version" > "$marker"
