#!/bin/sh
# Make the clone safe to turn into a template: no host identity left behind.
set -eu

subscription-manager unregister || true
subscription-manager clean || true
dnf clean all
rm -f /etc/ssh/ssh_host_*
truncate -s 0 /etc/machine-id
rm -f /etc/udev/rules.d/70-persistent-net.rules
rm -rf /tmp/* /var/tmp/*
