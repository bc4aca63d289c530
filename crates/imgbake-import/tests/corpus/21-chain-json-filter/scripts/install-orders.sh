#!/bin/sh
set -eu

dnf -y install java-17-amazon-corretto-headless
useradd --system --home /opt/orders --shell /sbin/nologin orders || true
install -d -o orders -g orders /opt/orders
curl -fsSL -o /opt/orders/orders.jar \
  "https://artifacts.acme.example/orders/${APP_VERSION}/orders-${APP_VERSION}.jar"
chown orders:orders /opt/orders/orders.jar
install -m 0644 /tmp/orders.service /etc/systemd/system/orders.service
systemctl enable orders.service
