#!/bin/sh
set -eu

mkdir -p "/etc/${SERVICE}"
cat > "/etc/systemd/system/${SERVICE}.service" <<UNIT
[Unit]
Description=${SERVICE} container
After=docker.service
Requires=docker.service

[Service]
ExecStart=/usr/bin/docker run --rm --name ${SERVICE} -p 8080:8080 --env-file /etc/${SERVICE}/env registry.acme.example/${SERVICE}:latest
ExecStop=/usr/bin/docker stop ${SERVICE}
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
touch "/etc/${SERVICE}/env"
systemctl enable "${SERVICE}.service"
