#!/usr/bin/env bash
# What scripts/make-base-image.sh and the QEMU builder need: see scripts/install-packages.sh (one apt
# transaction, then a check that every command exists).
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/install-packages.sh" main >&2
