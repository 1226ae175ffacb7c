#!/usr/bin/env bash
# Regenerates xds-server/descriptors/envoy.bin from the envoy-types crate in use.
# Run after upgrading envoy-types, or after `translate` starts emitting a new message type.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest=$(cargo metadata --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
print(next(p["manifest_path"] for p in meta["packages"] if p["name"] == "envoy-types"))')
full="$(dirname "$manifest")/src/generated/types.bin"
cargo run --quiet -p xds-server --example trim_descriptors -- "$full" xds-server/descriptors/envoy.bin
