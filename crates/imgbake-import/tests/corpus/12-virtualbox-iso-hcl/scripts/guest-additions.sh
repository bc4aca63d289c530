#!/bin/sh
set -eu

VBOX_VERSION=$(cat /home/vagrant/.vbox_version)
mount -o loop "/home/vagrant/VBoxGuestAdditions_${VBOX_VERSION}.iso" /mnt
sh /mnt/VBoxLinuxAdditions.run --nox11 || echo "VBoxLinuxAdditions exited $? (expected without X11)"
umount /mnt
rm -f "/home/vagrant/VBoxGuestAdditions_${VBOX_VERSION}.iso"
