#!/bin/sh
# Upgrade the kernel and reboot. The provisioner sets expect_disconnect = true.
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get -y -q install linux-generic-hwe-24.04 || apt-get -y -q dist-upgrade
echo "rebooting into $(ls -1 /boot/vmlinuz-* | tail -n1)"
nohup sh -c 'sleep 2; reboot' >/dev/null 2>&1 &
