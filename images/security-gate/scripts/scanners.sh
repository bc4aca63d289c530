#!/bin/sh
# scanners: the security gate's tools installed once, in the parent image, so the gated children do
# not download them again (the recipes install what is missing themselves, but every child would).
# ssg/ may hold SCAP Security Guide .debs newer than the release's (bookworm's ssg-debian 0.1.65 has
# no Debian 12 content; trixie's 0.1.76 has ssg-debian12-ds.xml): they are installed instead.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q -o Acquire::Languages=none
if ls /tmp/ssg/*.deb >/dev/null 2>&1; then
    apt-get install -y -q --no-install-recommends lynis openscap-scanner debsecan
    dpkg -i /tmp/ssg/*.deb
else
    apt-get install -y -q --no-install-recommends lynis openscap-scanner debsecan ssg-debian
fi
rm -rf /tmp/ssg
# The scans run at build time; no daily lynis run on the image's machines.
systemctl disable lynis.timer 2>/dev/null || true
apt-get clean
rm -rf /var/lib/apt/lists/*
lynis --version
oscap --version | head -n 1
ls /usr/share/xml/scap/ssg/content/
