#!/bin/sh
# Java runtime and service account for the app tier.
set -eu

dnf -y install "java-${JAVA_VERSION}-openjdk-headless" open-vm-tools
systemctl enable --now vmtoolsd

if ! id "${APP_USER}" >/dev/null 2>&1; then
  useradd --system --create-home --shell /sbin/nologin "${APP_USER}"
fi
install -d -o "${APP_USER}" -g "${APP_USER}" -m 0750 /opt/app
