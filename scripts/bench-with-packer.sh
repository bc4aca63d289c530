#!/usr/bin/env bash
# Runs a builder's benchmark beside Packer 1.6.6: installs Debian's `packer` (for the comparison;
# CI does not run this) and the bed, then `cargo bench -p CRATE --bench build`.
#
#   scripts/bench-with-packer.sh imgbake-aws       EC2 (about 5 minutes: the proxy's delays are real)
#   scripts/bench-with-packer.sh imgbake-vsphere   vSphere on vcsim (about a minute)
set -euo pipefail
crate=${1:?usage: $0 imgbake-aws|imgbake-vsphere}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
if ! command -v packer >/dev/null 2>&1; then
    log=$(mktemp)
    if ! { "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends packer; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "bench-with-packer.sh: apt-get install packer failed" >&2
        exit 1
    fi
    rm -f "$log"
fi
echo "packer: $(packer version | head -1)"
"$root/tests/bed/install.sh"
cd "$root"
exec cargo bench -p "$crate" --bench build
