#!/bin/sh
set -eu

dnf -y remove gcc make kernel-devel kernel-headers
dnf clean all
rm -rf /var/cache/dnf /tmp/* /var/log/anaconda
truncate -s 0 /etc/machine-id
dd if=/dev/zero of=/EMPTY bs=1M 2>/dev/null || true
rm -f /EMPTY
sync
