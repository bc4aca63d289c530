#!/usr/bin/env bash
# Runs the vSphere builder benchmark against Packer 1.6.6: installs Debian's `packer` (for the
# comparison; CI does not run this), then `cargo bench -p imgbake-vsphere --bench build`.
# Needs the bed (tests/bed/install.sh). Takes about a minute.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
if ! command -v packer >/dev/null 2>&1; then
    log=$(mktemp)
    if ! { "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends packer; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "run.sh: apt-get install packer failed" >&2
        exit 1
    fi
    rm -f "$log"
fi
echo "packer: $(packer version | head -1)"
"$root/tests/bed/install.sh"
cd "$root"
exec cargo bench -p imgbake-vsphere --bench build
