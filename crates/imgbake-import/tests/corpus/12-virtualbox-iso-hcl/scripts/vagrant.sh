#!/bin/sh
set -eu

install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
curl -fsSL -o /home/vagrant/.ssh/authorized_keys \
  https://raw.githubusercontent.com/hashicorp/vagrant/main/keys/vagrant.pub
chmod 0600 /home/vagrant/.ssh/authorized_keys
chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys
sed -i 's/^#\?UseDNS .*/UseDNS no/' /etc/ssh/sshd_config
