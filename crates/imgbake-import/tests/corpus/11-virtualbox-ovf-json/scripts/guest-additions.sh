#!/bin/sh
# Install the VirtualBox Guest Additions ISO Packer uploaded to the home dir.
set -eu

apt-get update -q
apt-get install -y -q build-essential dkms "linux-headers-$(uname -r)"

VBOX_VERSION=$(cat /home/vagrant/.vbox_version)
ISO="/home/vagrant/VBoxGuestAdditions_${VBOX_VERSION}.iso"
mkdir -p /mnt/vbox
mount -o loop "$ISO" /mnt/vbox
sh /mnt/vbox/VBoxLinuxAdditions.run --nox11 || true
umount /mnt/vbox
rm -f "$ISO"
