#!/bin/sh
set -eu

curl -fsSL "https://deb.nodesource.com/setup_${NODE_MAJOR}.x" | bash -
apt-get -y -q install nodejs
npm install -g pm2@5
node --version
