#!/bin/sh
# tools: install the tool, and a kernel setting that only applies at boot (hence the reboot step).
set -eu
install -m 0755 /tmp/imgbake-hello /usr/local/bin/imgbake-hello
rm -f /tmp/imgbake-hello
echo 'vm.swappiness = 10' >/etc/sysctl.d/60-imgbake-tools.conf
echo tools >>/etc/imgbake/images
