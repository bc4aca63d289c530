#!/bin/bash
# Patch the freshly installed system and record the template version.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get -y dist-upgrade
apt-get -y install cloud-init open-vm-tools
echo "${BUILD_VERSION}" > /etc/template-version
echo "Provisioned by ${BUILD_USERNAME}" >> /etc/template-version

# A kernel update needs a reboot; the provisioner sets expect_disconnect.
if [ -f /var/run/reboot-required ]; then
  echo "Rebooting to load the new kernel"
  shutdown -r +0 &
fi
