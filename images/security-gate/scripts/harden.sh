#!/bin/sh
# hardened: what the gate's policy in tree.toml asks for.
#
# The SSH settings go at the top of /etc/ssh/sshd_config, before its Include of sshd_config.d (sshd
# takes the first value it reads, and the SCAP Security Guide's Debian 12 checks read that file
# only); earlier lines setting the same keys are removed. sshd reads them at its next start: this
# build's own connection is not cut.
set -eu
settings='PermitRootLogin no
PasswordAuthentication no
PermitEmptyPasswords no
KbdInteractiveAuthentication no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
MaxAuthTries 3
MaxSessions 2
ClientAliveInterval 300
ClientAliveCountMax 2
LogLevel VERBOSE
TCPKeepAlive no
Compression no'
config=/etc/ssh/sshd_config
tmp=$(mktemp)
{
    echo "# imgbake security-gate example: key-only logins, no root, no empty passwords"
    printf '%s\n' "$settings"
    keys=$(printf '%s\n' "$settings" | cut -d ' ' -f 1 | paste -sd '|' -)
    grep -Eiv "^[[:space:]#]*($keys)[[:space:]]" "$config"
} >"$tmp"
cat "$tmp" >"$config"
rm -f "$tmp"
for f in /etc/ssh/sshd_config.d/*.conf; do
    [ -f "$f" ] || continue
    keys=$(printf '%s\n' "$settings" | cut -d ' ' -f 1 | paste -sd '|' -)
    sed -Ei "/^[[:space:]]*($keys)[[:space:]]/Id" "$f"
done
sshd -t
# Credentials files: root only (the shadow group may read).
chown root:shadow /etc/shadow /etc/gshadow
chmod 0640 /etc/shadow /etc/gshadow
chmod 0644 /etc/passwd /etc/group
# No world-writable files outside the temporary directories.
find / -xdev \( -path /tmp -o -path /var/tmp -o -path /dev/shm \) -prune -o \
    -type f -perm -0002 -print -exec chmod o-w {} +
