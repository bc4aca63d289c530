#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get -y -q upgrade
# EXTRA_PACKAGES is a space separated list built from var.extra_packages.
# shellcheck disable=SC2086
apt-get -y -q install chrony curl jq ${EXTRA_PACKAGES}
