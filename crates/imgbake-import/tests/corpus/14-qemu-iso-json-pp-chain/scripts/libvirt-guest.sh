#!/bin/sh
set -eu

systemctl enable qemu-guest-agent
# Predictable eth0 naming for Vagrant's libvirt provider.
sed -i 's/GRUB_CMDLINE_LINUX=""/GRUB_CMDLINE_LINUX="net.ifnames=0 biosdevname=0"/' /etc/default/grub
update-grub
