#!/bin/sh
# What the CI job does: build the golden image, read its AMI id out of the
# manifest, and feed it to the service template. Only this script knows that
# app.json builds on base.json.
set -eu

BUILD_NUMBER=${BUILD_NUMBER:?set by CI}

packer build -var "build_number=${BUILD_NUMBER}" base.json

# artifact_id looks like "ca-central-1:ami-0123456789abcdef0"
BASE_AMI=$(jq -r '.builds[-1].artifact_id' manifest-base.json | cut -d: -f2)

packer build \
  -var "base_ami=${BASE_AMI}" \
  -var "build_number=${BUILD_NUMBER}" \
  app.json
