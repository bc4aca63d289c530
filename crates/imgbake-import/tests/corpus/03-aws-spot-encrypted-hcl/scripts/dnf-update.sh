#!/bin/sh
# Apply every available update and pin the release so rebuilds are repeatable.
set -eu

dnf -y upgrade --refresh
dnf -y install amazon-ssm-agent amazon-cloudwatch-agent audit
systemctl enable amazon-ssm-agent auditd
