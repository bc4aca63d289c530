#!/bin/sh
# Runs on the machine running Packer after the AMI exists.
set -eu

echo "New CI runner image: ${AMI_NAME} (artifact ${PACKER_BUILD_NAME:-runner})"
if [ -n "${SLACK_WEBHOOK_URL:-}" ]; then
  curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "{\"text\": \"New CI runner image ${AMI_NAME}\"}" "${SLACK_WEBHOOK_URL}"
fi
