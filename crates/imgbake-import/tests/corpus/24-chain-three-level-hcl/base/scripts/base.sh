#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get -y -q upgrade
apt-get -y -q install chrony curl ca-certificates gnupg
