#!/bin/sh
# Shared by both builders.
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get -y -q upgrade
apt-get -y -q install chrony curl jq
echo "IMAGE_VERSION=${IMAGE_VERSION}" > /etc/acme-image
