#!/bin/sh
# Bring every package up to date. A new kernel leaves /var/run/reboot-required behind: the reboot step
# after this one restarts the machine and waits for its boot identity to change (no fixed sleeps).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get -q -y -o Dpkg::Options::=--force-confold dist-upgrade
apt-get -q -y install unattended-upgrades amazon-cloudwatch-agent || apt-get -q -y install unattended-upgrades
apt-get -q -y autoremove --purge
apt-get clean
