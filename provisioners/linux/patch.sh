#!/bin/sh
# patch.sh — bring a Debian or Ubuntu machine up to date, then exit, so that the tree's next step
# reboots it into the new kernel and libraries:
#
#     [[images.base.steps]]
#     shell = { script = "provisioners/linux/patch.sh", execute_command = "sudo -n env {{vars}} sh -c {{quote command}}" }
#     [[images.base.steps]]
#     reboot = {}
#
# It does not reboot by itself: imgbake's reboot step knows when the machine is back (by its boot
# identity), which a script cannot tell it.
#
# Environment (set them with the step's `env`):
#   PATCH_HOLD          packages to keep at their installed version (space-separated; they stay
#                       held in the image: `apt-mark unhold` them in a later step if wanted)
#   PATCH_AUTOREMOVE    1 (default) removes packages nothing needs any more; 0 keeps them
#   PATCH_LOCK_TIMEOUT  seconds to wait for another apt/dpkg (unattended-upgrades at first boot) to
#                       finish; default 600
#
# Exit status: 0 when the machine is up to date; apt's status otherwise; 2 when it cannot run here
# (not root, no apt-get).
set -eu

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a # Ubuntu's needrestart: restart services without asking

if ! command -v apt-get >/dev/null 2>&1; then
    echo "patch.sh: apt-get not found: this script is for Debian and Ubuntu" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "patch.sh: must run as root; give the step an execute_command with sudo" >&2
    exit 2
fi

lock_timeout=${PATCH_LOCK_TIMEOUT:-600}
# Keep changed config files as the image has them; take the package's for files nobody changed.
apt() {
    apt-get -y -q -o "DPkg::Lock::Timeout=$lock_timeout" \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

for p in ${PATCH_HOLD:-}; do
    apt-mark hold "$p"
done

apt update
apt dist-upgrade
if [ "${PATCH_AUTOREMOVE:-1}" = 1 ]; then
    apt autoremove --purge
fi
apt-get clean

reboot_file=${PATCH_REBOOT_REQUIRED_FILE:-/var/run/reboot-required}
if [ -e "$reboot_file" ]; then
    pkgs=$(tr '\n' ' ' <"$reboot_file.pkgs" 2>/dev/null || true)
    echo "patch.sh: up to date; a reboot is required${pkgs:+ (by $pkgs)}"
else
    echo "patch.sh: up to date"
fi
