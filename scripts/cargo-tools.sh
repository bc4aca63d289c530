#!/usr/bin/env bash
# Installs the cargo tools the test run needs (cargo-deny) from crates.io into the cache, once, at a
# pinned version, and prints the directory to put on PATH. Idempotent: a second run only checks.
#
#   IMGBAKE_CACHE   cache dir (default ~/.cache/imgbake): tools/bin/
set -euo pipefail
cache=${IMGBAKE_CACHE:-$HOME/.cache/imgbake}
root=$cache/tools
deny_version=0.20.2

die() { echo "cargo-tools.sh: $*" >&2; exit 1; }

if [ "$("$root/bin/cargo-deny" --version 2>/dev/null)" != "cargo-deny $deny_version" ]; then
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    # ~4 min once on 2 cores; --locked: the versions cargo-deny was released with.
    if ! cargo install --locked --quiet --root "$root" "cargo-deny@$deny_version" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "cargo install cargo-deny@$deny_version failed"
    fi
    [ "$("$root/bin/cargo-deny" --version 2>/dev/null)" = "cargo-deny $deny_version" ] ||
        die "cargo-deny $deny_version is not runnable from $root/bin after installing it"
    echo "cargo-tools.sh: installed cargo-deny $deny_version" >&2
fi
echo "$root/bin"
