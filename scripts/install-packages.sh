#!/usr/bin/env bash
# Installs the Debian packages imgbake's scripts need, in ONE apt transaction, then checks that every
# command they need exists, naming the package for any that does not.
#
#   scripts/install-packages.sh main    what scripts/main needs (the base image and the QEMU builder)
#   scripts/install-packages.sh bed     everything the test bed needs (includes `main`)
#
# Why one transaction: a machine may already hold a newer qemu-utils (from backports) than Debian's
# qemu-system-x86; installing qemu-system-x86 alone then REMOVES qemu-utils and qemu-img is gone.
# Asked together, apt keeps both working. Why check commands, not package names: a package can be
# "installed" while its command went missing (a removal by another install, a diversion).
# Prints one line; idempotent (no apt call when every command is there).
set -euo pipefail

die() { echo "install-packages.sh: $*" >&2; exit 1; }

# command:package, one per line. A package without a command of its own is checked by dpkg status
# (command field "-").
main_needs=(
    debootstrap:debootstrap
    qemu-system-x86_64:qemu-system-x86
    qemu-img:qemu-utils
    mkfs.ext4:e2fsprogs
    debugfs:e2fsprogs
    sfdisk:fdisk
    mcopy:mtools
    mkfs.fat:dosfstools
    syslinux:syslinux
    -:syslinux-common
)
bed_needs=(
    sshd:openssh-server
    ssh:openssh-client
    ssh-keygen:openssh-client
    busybox:busybox-static
    dropbear:dropbear-bin
    dropbearkey:dropbear-bin
    dropbearconvert:dropbear-bin
    xz:xz-utils
    ip:iproute2
    nft:nftables
    strace:strace
    pytest-3:python3-pytest
    -:python3-venv
    -:ca-certificates
    curl:curl
    openssl:openssl
    go:golang-go
    -:golang-github-vmware-govmomi-dev
    nginx:nginx
    vagrant:vagrant
    chromium:chromium
    # become in the ansible step tests (Ansible escalates with sudo)
    sudo:sudo
    puppet:puppet
)

case ${1:-} in
    main) needs=("${main_needs[@]}") ;;
    bed) needs=("${main_needs[@]}" "${bed_needs[@]}") ;;
    *) die "usage: $0 main|bed" ;;
esac

# Commands in sbin are looked up there too: PATH of a non-login root shell may lack it.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

have() {
    local cmd=$1 pkg=$2
    if [ "$cmd" = - ]; then
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ]
    else
        command -v "$cmd" >/dev/null 2>&1
    fi
}

missing_list() {
    local entry
    for entry in "${needs[@]}"; do
        have "${entry%%:*}" "${entry#*:}" || echo "$entry"
    done
}

missing=$(missing_list)
if [ -z "$missing" ]; then
    echo "packages ($1): ok"
    exit 0
fi

# Every package of the set, not only the missing ones: apt then resolves them together (and keeps
# a newer installed version where it can) instead of removing one to satisfy another.
packages=$(for entry in "${needs[@]}"; do echo "${entry#*:}"; done | sort -u)

sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
# Keep package scripts from starting services (sshd) on the machine; remove the guard even on
# failure, and never touch a policy-rc.d someone else put there.
policy=/usr/sbin/policy-rc.d
own_policy=0
log=$(mktemp)
cleanup() {
    rm -f "$log"
    if [ $own_policy = 1 ]; then "${sudo[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    own_policy=1
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
fi
"${sudo[@]}" apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }

# QEMU's packages must be of one version: a newer qemu-utils (10.x from backports) Breaks Debian's
# qemu-system-common 7.2, and apt will neither downgrade it by itself nor install qemu-system-x86
# beside it ("held broken packages"). So when qemu-system-x86 is missing, ask for qemu-utils at
# qemu-system-x86's version explicitly. (Measured on a fresh machine of this kind, 2026-11.)
apt_args=()
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 && echo "$packages" | grep -qx qemu-system-x86; then
    qemu_version=$(apt-cache policy qemu-system-x86 | sed -n 's/^ *Candidate: *//p')
    [ -n "$qemu_version" ] && [ "$qemu_version" != "(none)" ] ||
        die "apt knows no qemu-system-x86 (Debian main in sources.list?)"
    packages=$(echo "$packages" | sed "s/^qemu-utils\$/qemu-utils=$qemu_version/")
    apt_args+=(--allow-downgrades)
fi

# shellcheck disable=SC2086 # one word per package
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${apt_args[@]}" $packages >"$log" 2>&1; then
    cat "$log" >&2
    die "apt-get failed installing: $(echo $packages)"
fi

still=$(missing_list)
if [ -n "$still" ]; then
    for entry in $still; do
        cmd=${entry%%:*} pkg=${entry#*:}
        if [ "$cmd" = - ]; then
            echo "install-packages.sh: package $pkg is not installed after apt-get install" >&2
        else
            echo "install-packages.sh: command $cmd is missing after apt-get install (package $pkg)" >&2
        fi
    done
    die "some commands are still missing (see above); install their packages and run again"
fi
echo "packages ($1): installed $(echo "$missing" | sed 's/.*://' | sort -u | tr '\n' ' ')"
