#!/bin/sh
# Make the image a good OpenStack/KVM guest.
set -eu

apt-get update -q
apt-get install -y -q qemu-guest-agent cloud-initramfs-growroot
systemctl enable qemu-guest-agent

cat > /etc/cloud/cloud.cfg.d/90-datasources.cfg <<CFG
datasource_list: [ ConfigDrive, OpenStack, None ]
CFG

echo "IMAGE_VERSION=${IMAGE_VERSION}" > /etc/acme-image
