#!/bin/sh
# app: enable the service shipped in /opt/app.
set -eu
chmod 0755 /opt/app/app.sh
install -m 0644 /opt/app/imgbake-app.service /etc/systemd/system/imgbake-app.service
systemctl enable imgbake-app.service
echo app >>/etc/imgbake/images
