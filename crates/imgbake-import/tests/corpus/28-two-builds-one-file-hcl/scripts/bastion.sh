#!/bin/sh
# Bastion: session recording and tight sshd.
set -eu

dnf -y install tlog fail2ban
systemctl enable fail2ban
cat > /etc/ssh/sshd_config.d/50-bastion.conf <<CONF
AllowTcpForwarding yes
X11Forwarding no
PermitRootLogin no
PasswordAuthentication no
MaxSessions 20
ClientAliveInterval 300
CONF
