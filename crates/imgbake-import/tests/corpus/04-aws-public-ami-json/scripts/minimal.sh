#!/bin/sh
# Keep the public image small: no docs, no recommends, security updates only.
set -eu

cat > /etc/apt/apt.conf.d/90-acme-minimal <<APT
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT

apt-get update -q
apt-get -y -q upgrade
apt-get -y -q install --no-install-recommends cloud-init cloud-guest-utils ca-certificates
apt-get -y -q purge --auto-remove man-db manpages
rm -rf /usr/share/doc/* /usr/share/man/* /var/lib/apt/lists/*
