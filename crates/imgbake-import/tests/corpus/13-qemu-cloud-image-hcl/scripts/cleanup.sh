#!/bin/sh
# Remove the build user and every trace of this boot.
set -eu

apt-get -y autoremove --purge
apt-get clean
rm -rf /var/lib/apt/lists/*
cloud-init clean --logs --seed
truncate -s 0 /etc/machine-id
rm -f /etc/ssh/ssh_host_*
# The packer user is logged in right now; delete it on next boot instead.
cat > /etc/rc.local <<'RC'
#!/bin/sh
userdel -r packer 2>/dev/null || true
rm -f /etc/rc.local
RC
chmod +x /etc/rc.local
