#!/bin/sh
# PostgreSQL from the PGDG repository plus the requested extensions.
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get install -y -q curl ca-certificates gnupg lsb-release
install -d /usr/share/postgresql-common/pgdg
curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
  https://www.postgresql.org/media/keys/ACCC4CF8.asc
echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt $(lsb_release -cs)-pgdg main" \
  > /etc/apt/sources.list.d/pgdg.list
apt-get update -q
apt-get install -y -q "postgresql-${PG_MAJOR}"

for ext in ${PG_EXTENSIONS}; do
  case "$ext" in
    pg_stat_statements|pgcrypto) ;;  # shipped with the server
    timescaledb) echo "timescaledb is installed from its own repo by the app team's role" ;;
    *) apt-get install -y -q "postgresql-${PG_MAJOR}-$(echo "$ext" | tr '_' '-')" || true ;;
  esac
done

# Data volumes are formatted at first boot by cloud-init, not here.
systemctl disable postgresql
echo "ENVIRONMENT=${ENVIRONMENT}" > /etc/acme-postgres
