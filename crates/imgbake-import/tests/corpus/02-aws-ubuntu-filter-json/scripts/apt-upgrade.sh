#!/bin/sh
# Bring the source image fully up to date before anything else is installed.
set -eu

apt-get update -q
apt-get -y -q -o Dpkg::Options::="--force-confdef" -o Dpkg::Options::="--force-confold" dist-upgrade
apt-get -y -q autoremove --purge
