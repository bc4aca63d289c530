#!/bin/sh
# KVM-specific guest tooling and datasource.
set -eu

apt-get -y -q install qemu-guest-agent
systemctl enable qemu-guest-agent
cat > /etc/cloud/cloud.cfg.d/90-kvm.cfg <<CFG
datasource_list: [ NoCloud, ConfigDrive, None ]
CFG
