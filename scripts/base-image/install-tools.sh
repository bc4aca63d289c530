#!/usr/bin/env bash
# Installs what scripts/make-base-image.sh and the QEMU builder need, with apt, only when missing.
# Idempotent and quiet: prints one line.
set -euo pipefail
packages=(
    debootstrap               # the Debian userland
    qemu-system-x86 qemu-utils # the builder: qemu-system-x86_64, qemu-img
    syslinux syslinux-common mtools dosfstools # boot loader on a FAT partition, written without mounting
    e2fsprogs fdisk            # mkfs.ext4 -d, sfdisk on a file
)
missing=()
for p in "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "base-image tools: ok" >&2
    exit 0
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-tools.sh: apt-get failed installing: ${missing[*]}" >&2
    exit 1
fi
echo "base-image tools: installed ${missing[*]}" >&2
