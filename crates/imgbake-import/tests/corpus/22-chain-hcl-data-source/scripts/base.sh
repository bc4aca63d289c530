#!/bin/sh
set -eu

dnf -y upgrade --refresh
dnf -y install chrony java-17-openjdk-headless tar
systemctl enable chronyd
echo "vm.swappiness = 1" > /etc/sysctl.d/60-dataplat.conf
