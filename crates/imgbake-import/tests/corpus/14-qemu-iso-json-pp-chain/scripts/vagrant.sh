#!/bin/sh
# Create the vagrant user with the well-known insecure key.
set -eu

id "${BOX_USER}" >/dev/null 2>&1 || useradd -m -s /bin/bash "${BOX_USER}"
echo "${BOX_USER}:vagrant" | chpasswd
echo "${BOX_USER} ALL=(ALL) NOPASSWD: ALL" > "/etc/sudoers.d/${BOX_USER}"
chmod 0440 "/etc/sudoers.d/${BOX_USER}"

install -d -m 0700 -o "${BOX_USER}" -g "${BOX_USER}" "/home/${BOX_USER}/.ssh"
wget -qO "/home/${BOX_USER}/.ssh/authorized_keys" \
  https://raw.githubusercontent.com/hashicorp/vagrant/main/keys/vagrant.pub
chmod 0600 "/home/${BOX_USER}/.ssh/authorized_keys"
chown "${BOX_USER}:${BOX_USER}" "/home/${BOX_USER}/.ssh/authorized_keys"
