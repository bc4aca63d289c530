#!/bin/sh
# NAT instance: forward and masquerade everything out of the primary interface.
set -eu

dnf -y install iptables-services
echo "net.ipv4.ip_forward = 1" > /etc/sysctl.d/90-nat.conf
cat > /usr/local/sbin/nat-setup <<'SCRIPT'
#!/bin/sh
IFACE=$(ip route show default | awk '{print $5; exit}')
iptables -t nat -C POSTROUTING -o "$IFACE" -j MASQUERADE 2>/dev/null \
  || iptables -t nat -A POSTROUTING -o "$IFACE" -j MASQUERADE
SCRIPT
chmod 0755 /usr/local/sbin/nat-setup
cat > /etc/systemd/system/nat-setup.service <<UNIT
[Unit]
Description=Masquerade outbound traffic
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nat-setup

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable nat-setup.service iptables
