#!/bin/sh
# Go, Node.js and the usual CLI tools.
set -eu

curl -fsSL "https://go.dev/dl/go${GO_VERSION}.linux-amd64.tar.gz" | tar -C /usr/local -xz

curl -fsSL "https://deb.nodesource.com/setup_${NODE_MAJOR}.x" | bash -
apt-get install -y -q nodejs git make jq ripgrep vim

install -m 0644 /tmp/devbox.sh /etc/profile.d/devbox.sh
echo "${DEVBOX_VERSION}" > /etc/devbox-release
