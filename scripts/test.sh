#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit tests and the end-to-end tests against
# real peers. Installs the peers first when they are missing (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the workspace's binaries as processes.
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-fail-fast
