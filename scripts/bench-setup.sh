#!/usr/bin/env bash
# Installs the peers the benchmarks compare against (on top of scripts/setup.sh) and builds the
# release binaries. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! .venv/awscli/bin/aws --version >/dev/null 2>&1; then
  echo "[bench-setup] installing awscli into .venv/awscli" >&2
  python3 -m venv .venv/awscli
  .venv/awscli/bin/pip install --quiet --disable-pip-version-check awscli
fi
cargo build --release --locked --bins -p tests -p xds-server -p s3-config-loader
