#!/bin/sh
# PCI baseline: FIPS crypto policy and audit rules for privileged commands.
set -eu

dnf -y install crypto-policies-scripts
fips-mode-setup --enable

cat > /etc/audit/rules.d/50-privileged.rules <<'RULES'
-a always,exit -F path=/usr/bin/sudo -F perm=x -F auid>=1000 -F auid!=unset -k privileged
-a always,exit -F path=/usr/bin/su -F perm=x -F auid>=1000 -F auid!=unset -k privileged
-w /etc/sudoers -p wa -k scope
-w /etc/sudoers.d/ -p wa -k scope
RULES
augenrules --load || true
