#!/bin/bash
# Generalise the VM before it becomes a template.
set -euo pipefail

rm -f /etc/sudoers.d/packer
rm -f /etc/ssh/ssh_host_*
rm -f /etc/cloud/cloud.cfg.d/99-installer.cfg /etc/cloud/cloud.cfg.d/subiquity-disable-cloudinit-networking.cfg
cloud-init clean --logs
truncate -s 0 /etc/machine-id
apt-get -y autoremove --purge
apt-get clean
