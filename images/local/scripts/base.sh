#!/bin/sh
# base: record when the image was made, and start the list of images it is built from.
set -eu
mkdir -p /etc/imgbake
date -u +%Y-%m-%dT%H:%M:%SZ >/etc/imgbake/built-at
echo base >/etc/imgbake/images
