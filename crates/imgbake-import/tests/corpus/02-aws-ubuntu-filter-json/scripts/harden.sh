#!/bin/sh
# Baseline hardening: sysctl, sshd and unattended security upgrades.
set -eu

install -m 0644 /tmp/99-acme-hardening.conf /etc/sysctl.d/99-acme-hardening.conf
sysctl --system >/dev/null

sed -i 's/^#\?PasswordAuthentication .*/PasswordAuthentication no/' /etc/ssh/sshd_config
sed -i 's/^#\?PermitRootLogin .*/PermitRootLogin no/' /etc/ssh/sshd_config

cat > /etc/apt/apt.conf.d/20auto-upgrades <<APT
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT
