#!/bin/sh
# Full upgrade, then reboot into the new kernel (expect_disconnect is set).
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get -y -q dist-upgrade
reboot
