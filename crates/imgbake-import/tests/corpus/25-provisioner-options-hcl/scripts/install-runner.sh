#!/bin/sh
# Install a pinned GitLab Runner. Variables arrive through an env var file
# (use_env_var_file = true) so the token never shows on a command line.
set -eu

curl -fsSL -o /usr/local/bin/gitlab-runner \
  "https://gitlab-runner-downloads.s3.amazonaws.com/v${RUNNER_VERSION}/binaries/gitlab-runner-linux-amd64"
chmod 0755 /usr/local/bin/gitlab-runner
id gitlab-runner >/dev/null 2>&1 || useradd --comment 'GitLab Runner' --create-home gitlab-runner --shell /bin/bash
gitlab-runner install --user=gitlab-runner --working-directory=/home/gitlab-runner

install -d /etc/gitlab-runner/conf.d
cp /tmp/runner-conf.d/*.toml /etc/gitlab-runner/conf.d/
cp /tmp/runner-release /etc/gitlab-runner/release
echo "installed ${RUNNER_TARBALL}"

apt-get -y -q install docker.io git-lfs
if [ -n "${REGISTRATION}" ]; then
  echo "registration token provided; runner will register on first boot"
  echo "${REGISTRATION}" > /etc/gitlab-runner/.registration-token
  chmod 0600 /etc/gitlab-runner/.registration-token
fi
