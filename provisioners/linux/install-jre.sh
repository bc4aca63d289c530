#!/bin/sh
# Install the Temurin JRE from Adoptium's apt repository.
set -eu
: "${JAVA_MAJOR:?set JAVA_MAJOR}"
export DEBIAN_FRONTEND=noninteractive
apt-get -q -y install wget gpg apt-transport-https
wget -qO- https://packages.adoptium.net/artifactory/api/gpg/key/public | gpg --dearmor > /usr/share/keyrings/adoptium.gpg
. /etc/os-release
echo "deb [signed-by=/usr/share/keyrings/adoptium.gpg] https://packages.adoptium.net/artifactory/deb $VERSION_CODENAME main" > /etc/apt/sources.list.d/adoptium.list
apt-get update -q
apt-get -q -y install "temurin-${JAVA_MAJOR}-jre"
java -version
