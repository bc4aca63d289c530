#!/bin/sh
set -eu

apt-get -y autoremove --purge
apt-get clean
rm -f /etc/sudoers.d/packer
truncate -s 0 /etc/machine-id
fstrim -av || true
