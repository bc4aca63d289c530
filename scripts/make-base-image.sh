#!/usr/bin/env bash
# Builds imgbake's local base image: a small bootable Debian 12 disk with an SSH server, from Debian
# packages only (debootstrap + the Debian kernel), with a real boot loader (syslinux, BIOS/MBR), so the
# image boots under QEMU and after conversion to vmdk (VMware) or vdi (VirtualBox).
#
#   scripts/make-base-image.sh [OUT_DIR]     build (or find in the cache) and print the image path
#   scripts/make-base-image.sh --check       print the cached image path, or exit 3 if not built
#
# The result is cached under ${IMGBAKE_CACHE:-$HOME/.cache/imgbake}/base/<hash>/ (hash of this script
# and scripts/base-image/); OUT_DIR, when given, gets links base.qcow2, vmlinuz, initrd.img to it.
# See docs/builders/qemu.md for what is in the image and how a builder logs in (the fw_cfg seed).
#
# Needs root (debootstrap chroots, mounts /proc in the target). Installs its own tools with apt when
# missing. No loop devices: the partitions are written straight into the image file.
#
#   IMGBAKE_CACHE          cache dir (default ~/.cache/imgbake)
#   IMGBAKE_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
helpers=$here/base-image
cache=${IMGBAKE_CACHE:-$HOME/.cache/imgbake}
mirror=${IMGBAKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
disk_mib=2048 # virtual size; the qcow2 only holds what is written
boot_mib=128  # FAT boot partition: syslinux, kernel, initrd (room for an upgrade)

die() { echo "make-base-image.sh: $*" >&2; exit 1; }
say() { [ -n "${quiet:-}" ] || echo "make-base-image.sh: $*" >&2; }

check_only=
out_dir=
for arg in "$@"; do
    case $arg in
        --check) check_only=1 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $arg (see --help)" ;;
        *) out_dir=$arg ;;
    esac
done

inputs_hash() {
    (
        cd "$here"
        echo "$mirror $suite $disk_mib $boot_mib"
        { echo make-base-image.sh; find base-image -type f -o -type l; } | LC_ALL=C sort | while read -r f; do
            printf '%s\n' "$f"
            if [ -L "$f" ]; then readlink "$f"; else sha256sum <"$f"; fi
            stat -c '%a' "$f"
        done
    ) | sha256sum | cut -c1-16
}

publish() {
    if [ -n "$out_dir" ]; then
        # Links, not copies: builds resolve them to the content-addressed cache entry, so an overlay
        # made today keeps pointing at these exact bytes even after the script is changed and rerun.
        mkdir -p "$out_dir"
        for f in base.qcow2 vmlinuz initrd.img; do
            ln -sfn "$1/$f" "$out_dir/$f"
        done
        echo "$(cd "$out_dir" && pwd)/base.qcow2"
    else
        echo "$1/base.qcow2"
    fi
}

hash=$(inputs_hash)
out=$cache/base/$hash
if [ -s "$out/base.qcow2" ]; then
    publish "$out"
    exit 0
fi
if [ -n "$check_only" ]; then
    echo "make-base-image.sh: the base image for these sources is not built ($out); run scripts/make-base-image.sh" >&2
    exit 3
fi
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap needs it); try: sudo $0 $*"

# --- tools (idempotent: only missing packages are installed) ---
"$helpers/install-tools.sh"

start=$(date +%s)
mkdir -p "$cache/base"
work=$(mktemp -d "$cache/base/.build.XXXXXX")
root=$work/root
cleanup() {
    # A failed run must not leave /proc mounted inside the cache.
    for m in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m"
    done
    rm -rf "$work"
}
trap cleanup EXIT
log=$work/build.log
run() { "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; die "failed: $*  (log above)"; }; }

# --- 1. Debian userland ---
say "debootstrap $suite (minbase) from $mirror"
run debootstrap --variant=minbase \
    --include=systemd-sysv,udev,kmod,openssh-server,acpid,iproute2,cloud-guest-utils,ca-certificates,sudo,less \
    "$suite" "$root" "$mirror"

# --- 2. our configuration, then the kernel (so dpkg's trim list and initramfs config apply) ---
cp -a "$helpers/rootfs/." "$root/"
cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SRC
echo imgbake >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\timgbake\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
root_uuid=$(cat /proc/sys/kernel/random/uuid)
cat >"$root/etc/fstab" <<FSTAB
UUID=$root_uuid / ext4 errors=remount-ro 0 1
LABEL=IMGBOOT /boot/imgbake vfat defaults,nofail,umask=0077 0 2
FSTAB
mkdir -p "$root/boot/imgbake"

mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
chr() { run chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
say "installing the Debian kernel"
chr apt-get update -qq
chr apt-get install -y -qq --no-install-recommends linux-image-amd64
chr apt-get clean
umount "$root/dev" "$root/sys" "$root/proc"

# Units: our seed before sshd, DHCP by networkd, no background apt runs during builds.
run systemctl --root="$root" enable imgbake-seed.service imgbake-growroot.service systemd-networkd.service
# (e2scrub_reap and getty-static cost seconds of emulated CPU at every boot and do nothing useful here.)
run systemctl --root="$root" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service getty-static.service systemd-networkd-wait-online.service
# Per-machine identity must not be baked into the base: host keys come from the seed or are made at
# first boot; machine-id is generated at boot (an empty file means "not yet initialised").
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Documentation and translations debootstrap installed before the trim list was in place.
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/locale/*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log

kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -n 1)
kver=${kernel#vmlinuz-}
[ -s "$root/boot/initrd.img-$kver" ] || die "no initrd for kernel $kver in the image"

# --- 3. the disk: MBR, FAT boot partition (syslinux), ext4 root; written in place, no loop device ---
say "assembling the disk (kernel $kver)"
disk=$work/disk.raw
boot_start=2048 # sectors
boot_sectors=$((boot_mib * 2048))
root_start=$((boot_start + boot_sectors))
root_sectors=$((disk_mib * 2048 - root_start))
truncate -s "${disk_mib}M" "$disk"
printf 'label: dos\nstart=%s, size=%s, type=c, bootable\nstart=%s, size=%s, type=83\n' \
    "$boot_start" "$boot_sectors" "$root_start" "$root_sectors" | run sfdisk --no-reread --no-tell-kernel "$disk"
run mkfs.fat -F 16 -n IMGBOOT --offset "$boot_start" -h "$boot_start" "$disk" $((boot_sectors / 2))
fat="$disk@@$((boot_start * 512))"
cat >"$work/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$root_uuid ro net.ifnames=0 console=tty0 console=ttyS0,115200 quiet
CFG
run mcopy -i "$fat" "$root/boot/$kernel" ::vmlinuz
run mcopy -i "$fat" "$root/boot/initrd.img-$kver" ::initrd.img
run mcopy -i "$fat" "$work/syslinux.cfg" ::syslinux.cfg
run syslinux --install --offset $((boot_start * 512)) "$disk"
run dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc
run mkfs.ext4 -q -F -L root -U "$root_uuid" -d "$root" -E offset=$((root_start * 512)) \
    "$disk" $((root_sectors / 2))k

mkdir "$work/out"
# The kernel and initrd also go next to the disk: for direct kernel boot (source.kernel/initrd) and
# for the builder's KVM probe (it boots this kernel to a panic to see whether KVM really runs guests).
cp "$root/boot/$kernel" "$work/out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/out/initrd.img"
run qemu-img convert -f raw -O qcow2 "$disk" "$work/out/base.qcow2"
rm -f "$disk"
cat >"$work/out/base.json" <<META
{"suite": "$suite", "kernel": "$kver", "root_uuid": "$root_uuid", "user": "root",
 "seed": "fw_cfg opt/imgbake/authorized_keys, opt/imgbake/ssh_host_ed25519_key",
 "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "build_seconds": $(($(date +%s) - start))}
META

# Rename into place last, so a half-built image is never mistaken for a cached one.
rm -rf "$out"
mv "$work/out" "$out"
say "built in $(($(date +%s) - start)) s: $out/base.qcow2"
publish "$out"
