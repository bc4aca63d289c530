#!/bin/sh
set -eu

dnf -y upgrade --refresh
dnf -y install amazon-ssm-agent audit chrony
systemctl enable amazon-ssm-agent auditd chronyd
sed -i 's/^#\?PermitRootLogin .*/PermitRootLogin no/' /etc/ssh/sshd_config
echo "base built $(date -u +%Y-%m-%dT%H:%M:%SZ)" > /etc/acme-base
