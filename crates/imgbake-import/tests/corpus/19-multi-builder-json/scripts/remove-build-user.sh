#!/bin/sh
# Lock the password the NoCloud seed set for the build.
set -eu

passwd -l ubuntu
sed -i 's/^PasswordAuthentication yes/PasswordAuthentication no/' /etc/ssh/sshd_config
cloud-init clean --logs --seed
truncate -s 0 /etc/machine-id
