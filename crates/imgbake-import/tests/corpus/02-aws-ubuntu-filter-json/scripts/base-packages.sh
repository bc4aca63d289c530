#!/bin/sh
# Packages every Acme host is expected to have.
set -eu

apt-get install -y -q --no-install-recommends \
  amazon-ec2-utils \
  chrony \
  curl \
  jq \
  unattended-upgrades \
  auditd \
  awscli

systemctl enable chrony auditd

mkdir -p /etc/acme
cat > /etc/acme/image-release <<RELEASE
IMAGE_VERSION=${IMAGE_VERSION}
TEAM=${TEAM}
RELEASE
