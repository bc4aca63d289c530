#!/bin/sh
set -eu

useradd --system --home /opt/kafka --shell /sbin/nologin kafka || true
curl -fsSL "https://archive.apache.org/dist/kafka/${KAFKA_VERSION}/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.tgz" \
  | tar -xz -C /opt
ln -sfn "/opt/kafka_${SCALA_VERSION}-${KAFKA_VERSION}" /opt/kafka
chown -R kafka:kafka "/opt/kafka_${SCALA_VERSION}-${KAFKA_VERSION}"
install -d -o kafka -g kafka /var/lib/kafka
