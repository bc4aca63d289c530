#!/bin/bash
# Runs after the reboot; proves we came back on the newest installed kernel.
set -euo pipefail

running=$(uname -r)
newest=$(ls -1 /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | sort -V | tail -n1)
echo "running ${running}, newest installed ${newest}"
[ "${running}" = "${newest}" ]
