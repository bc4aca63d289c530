#!/usr/bin/env bash
# Builds the imgbake QEMU test guest from Debian packages only: the Debian kernel, and an initramfs
# holding busybox-static, dropbear (with its shared libraries) and the kernel modules for the NIC
# (virtio-net, e1000) and the state disk (virtio-blk).
#
# Output: $CACHE/guest/<hash>/{vmlinux,vmlinuz,initrd.img,kernel-version} (vmlinux: the kernel
# uncompressed, booted by QEMU through PVH; vmlinuz kept as fallback); <hash> covers this script and
# everything under rootfs/, so editing the guest rebuilds it. Prints the output directory.
# `build.sh --check` only prints it, or exits 3 when that guest is not built yet.
# Needs: apt-get, dpkg-deb, busybox-static, dropbear-bin, gzip, xz, sha256sum (tests/bed/install.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${IMGBAKE_CACHE:-$HOME/.cache/imgbake}
# Loaded in this order after dependencies; names as in `depends=` (underscores). Both NIC
# drivers: virtio-net (link up at once) is the default, e1000 the classic alternative.
wanted_modules=(virtio_pci virtio_blk virtio_net e1000)

die() { echo "guest/build.sh: $*" >&2; exit 1; }

inputs_hash() {
    (
        cd "$here"
        { echo build.sh; find rootfs -type f -o -type l; } | LC_ALL=C sort | while read -r f; do
            printf '%s\n' "$f"
            if [ -L "$f" ]; then readlink "$f"; else sha256sum <"$f"; fi
            stat -c '%a' "$f"
        done
    ) | sha256sum | cut -c1-16
}

hash=$(inputs_hash)
out=$cache/guest/$hash
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
    echo "$out"
    exit 0
fi
if [ "${1:-}" = --check ]; then
    echo "guest/build.sh: the test guest for these sources is not built ($out); run tests/bed/install.sh" >&2
    exit 3
fi

for tool in apt-get apt-cache dpkg-deb gzip sha256sum ldd od; do
    command -v "$tool" >/dev/null || die "missing $tool (run tests/bed/install.sh)"
done
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list | grep -x cpio >/dev/null || die "missing busybox-static (run tests/bed/install.sh)"
dropbear=$(command -v dropbear || echo /usr/sbin/dropbear)
[ -x "$dropbear" ] || die "missing dropbear (dropbear-bin; run tests/bed/install.sh)"
[ -x /usr/bin/dropbearconvert ] && [ -x /usr/bin/dropbearkey ] || die "missing dropbearconvert/dropbearkey (dropbear-bin)"

mkdir -p "$cache/guest"
work=$(mktemp -d "$cache/guest/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- kernel: the version the Debian archive currently points linux-image-amd64 at ---
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[^ ]*-amd64\)$/\1/p' | head -n 1
}
kpkg=$(kernel_package)
if [ -z "$kpkg" ]; then
    # Fresh machines and slim images often ship without package lists.
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
    kpkg=$(kernel_package)
fi
[ -n "$kpkg" ] || die "apt knows no linux-image-amd64 (Debian main in sources.list?)"
apt_opts=(-qq)
# As root, apt would try to drop to _apt, which cannot write into our private cache.
[ "$(id -u)" = 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
(cd "$work" && apt-get "${apt_opts[@]}" download "$kpkg") || die "apt-get download $kpkg failed"
deb=$(echo "$work"/"$kpkg"_*.deb)
[ -f "$deb" ] || die "download of $kpkg left no .deb in $work"
mkdir "$work/k"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/k" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/*'
rm -f "$deb"
vmlinuz=$(echo "$work"/k/boot/vmlinuz-*)
[ -f "$vmlinuz" ] || die "no vmlinuz in $kpkg"
kver=${vmlinuz##*/vmlinuz-}

# The uncompressed kernel (ELF with a PVH entry note), which QEMU boots directly: that skips
# ~3 s of XZ decompression under TCG on every boot and reboot. Debian 12 kernels are XZ.
mkdir "$work/out"
xz_at=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
if [ -n "$xz_at" ] && command -v xz >/dev/null &&
    tail -c +$((xz_at + 1)) "$vmlinuz" >"$work/vmlinux.xz" &&
    xz -dc --single-stream "$work/vmlinux.xz" >"$work/out/vmlinux" 2>/dev/null &&
    [ "$(head -c 4 "$work/out/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    :
else
    echo "guest/build.sh: cannot extract an uncompressed vmlinux from $kpkg; guests boot ~3 s slower" >&2
    rm -f "$work/out/vmlinux"
fi

# --- modules: resolve `depends=` from each .ko's modinfo section (Debian ships them uncompressed) ---
declare -A ko_path=()
while IFS= read -r -d '' ko; do
    name=${ko##*/}
    name=${name%.ko}
    ko_path[${name//-/_}]=$ko
done < <(find "$work/k/lib/modules/$kver/kernel" -name '*.ko' -print0)

declare -A loaded=()
order=()
add_module() {
    local name=${1//-/_} dep deps
    [ -n "${loaded[$name]:-}" ] && return 0
    [ -n "${ko_path[$name]:-}" ] || die "kernel $kver has no module $name (built in? then drop it from wanted_modules)"
    loaded[$name]=1
    deps=$(tr '\0' '\n' <"${ko_path[$name]}" | sed -n 's/^depends=//p' | head -n 1)
    for dep in ${deps//,/ }; do add_module "$dep"; done
    order+=("$name")
}
for m in "${wanted_modules[@]}"; do add_module "$m"; done

# --- initramfs root ---
root=$work/root
mkdir -p "$root"/{bin,lib/x86_64-linux-gnu,lib64,etc,dev,proc,sys,tmp,run,root,var,usr,lib/modules/imgbake}
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"
cp -a "$here/rootfs/." "$root/"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -sf bin/busybox "$root/init" # busybox runs as init when called as /init; it reads /etc/inittab

for bin in "$dropbear" /usr/bin/dropbearconvert /usr/bin/dropbearkey; do
    cp "$bin" "$root/bin/"
    # Copy every shared library (and the loader) at the path ldd resolved it to.
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
    done
done

for m in "${order[@]}"; do
    cp "${ko_path[$m]}" "$root/lib/modules/imgbake/$m.ko"
    echo "$m" >>"$root/lib/modules/imgbake/order"
done

cp "$vmlinuz" "$work/out/vmlinuz"
echo "$kver" >"$work/out/kernel-version"
(cd "$root" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -6 >"$work/out/initrd.img"

# Rename into place last, so a half-built guest is never mistaken for a cached one.
rm -rf "$out"
mv "$work/out" "$out"
echo "$out"
