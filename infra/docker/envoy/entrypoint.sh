#!/bin/sh
# The generic Envoy image's entrypoint: get the task's identity (when asked to) and a bootstrap,
# check it, then become Envoy.
#
# From S3 (a template rendered with the task's metadata and the environment variables PROXY and
# XDS_HOST, or those S3_CONFIG_LOADER_TEMPLATE_ENV names instead, and any prefixed S3CL_):
#   ENVOY_BOOTSTRAP_S3=s3://BUCKET/envoy/bootstrap.yaml.tmpl
# or generated here for a proxy role of the catalog:
#   XDS_SERVER_PROXY=intdemo XDS_SERVER_XDS=xds.prism-test.atala.local:18000 [XDS_SERVER_DELTA=true]
# or, with neither set, the file at ENVOY_BOOTSTRAP as it is (rendered by an init container that
# ran `s3-config-loader get`, as infra/modules/envoy-service does with identities off).
# node.id is the ECS task ARN (from ECS_CONTAINER_METADATA_URI_V4), node.cluster the proxy role.
# ENVOY (default: envoy), ENVOY_BOOTSTRAP (default: /etc/envoy/envoy.yaml), ENVOY_ARGS;
# XDS_SERVER_ENVOY_ADMIN (default 127.0.0.1:9901), XDS_SERVER_ENVOY_STATS_LISTEN (0.0.0.0:9902).
#
# With XDS_SERVER_IDENTITY=1 (or true), first the task's identity: `xds-server identity` proves
# the task role (the standard credential chain) to the control plane at XDS_SERVER_XDS and
# writes the proxy's client certificate into XDS_SERVER_IDENTITY_DIR, by default identity/ beside
# the bootstrap (/etc/envoy/identity: the bootstrap's directory must be writable anyway, also
# under a read-only root filesystem, where /tmp may not be). The control plane's certificate is
# checked against XDS_SERVER_XDS_CA (a PEM file) or XDS_SERVER_XDS_CA_PEM (the PEM itself, as ECS
# passes configuration: written to xds-ca.pem in that directory). No certificate, no Envoy: the
# container fails. A generated bootstrap then does mutual TLS with the certificate (the exported
# XDS_SERVER_IDENTITY_DIR tells `xds-server bootstrap`); one from S3 or an init container must
# have been made with `--identity-dir` naming the same directory.
#
# A task definition written for App Mesh's Envoy works unchanged: APPMESH_RESOURCE_ARN (the
# virtual node's or gateway's ARN, which the catalog's `aliases` name) or APPMESH_VIRTUAL_NODE_NAME
# (mesh/MESH/virtualNode/NODE: the proxy NODE) stands for XDS_SERVER_PROXY, and
# APPMESH_XDS_ENDPOINT for XDS_SERVER_XDS, when those are not set.
set -eu

if [ -z "${XDS_SERVER_PROXY:-}" ]; then
  if [ -n "${APPMESH_RESOURCE_ARN:-}" ]; then
    export XDS_SERVER_PROXY="$APPMESH_RESOURCE_ARN"
  elif [ -n "${APPMESH_VIRTUAL_NODE_NAME:-}" ]; then
    export XDS_SERVER_PROXY="${APPMESH_VIRTUAL_NODE_NAME##*/}"
  fi
fi
if [ -z "${XDS_SERVER_XDS:-}" ] && [ -n "${APPMESH_XDS_ENDPOINT:-}" ]; then
  export XDS_SERVER_XDS="$APPMESH_XDS_ENDPOINT"
fi

envoy=${ENVOY:-envoy}
bootstrap=${ENVOY_BOOTSTRAP:-/etc/envoy/envoy.yaml}
bootstrap_dir=$(dirname "$bootstrap")
# Under an ECS proxyConfiguration (App Mesh style transparent egress) Envoy runs as UID 1337, the
# one the redirect ignores: the directory it writes its bootstrap into must be that user's (the
# image's /etc/envoy is; a task volume is root's until made Envoy's, as
# infra/modules/envoy-service does).
writable_bootstrap_dir() {
  if ! { [ -d "$bootstrap_dir" ] || mkdir -p "$bootstrap_dir" 2>/dev/null; } || [ ! -w "$bootstrap_dir" ]; then
    echo "generic-envoy: cannot write the bootstrap into $bootstrap_dir as uid $(id -u): make the directory this user's, or set ENVOY_BOOTSTRAP to a path in one" >&2
    exit 1
  fi
}

case "${XDS_SERVER_IDENTITY:-}" in
  1 | true)
    : "${XDS_SERVER_XDS:?XDS_SERVER_IDENTITY needs XDS_SERVER_XDS (the control plane, HOST:PORT)}"
    writable_bootstrap_dir
    XDS_SERVER_IDENTITY_DIR=${XDS_SERVER_IDENTITY_DIR:-$(dirname "$bootstrap")/identity}
    export XDS_SERVER_IDENTITY_DIR
    [ -d "$XDS_SERVER_IDENTITY_DIR" ] || mkdir -p -m 0700 "$XDS_SERVER_IDENTITY_DIR"
    if [ -n "${XDS_SERVER_XDS_CA_PEM:-}" ]; then
      if [ -n "${XDS_SERVER_XDS_CA:-}" ]; then
        echo "generic-envoy: set XDS_SERVER_XDS_CA (a file) or XDS_SERVER_XDS_CA_PEM (its text), not both" >&2
        exit 1
      fi
      XDS_SERVER_XDS_CA="$XDS_SERVER_IDENTITY_DIR/xds-ca.pem"
      printf '%s\n' "$XDS_SERVER_XDS_CA_PEM" > "$XDS_SERVER_XDS_CA"
    fi
    : "${XDS_SERVER_XDS_CA:?XDS_SERVER_IDENTITY needs XDS_SERVER_XDS_CA (a PEM file) or XDS_SERVER_XDS_CA_PEM (the PEM)}"
    export XDS_SERVER_XDS_CA
    xds-server identity
    # The renewer is this shell's child. `exec` below keeps the process (and its pid), so the
    # renewer goes on as Envoy's child for as long as the container runs. At stop, ECS signals
    # only the container's pid 1, Envoy; once Envoy has exited, the container's pid namespace
    # ends and the kernel kills the renewer with it, which is harmless: it replaces files by
    # rename only. Should it die earlier, Envoy keeps the certificate it has (until its expiry,
    # 24 h after issue by default) and the renewer's error is in the container's log.
    xds-server identity --renew < /dev/null &
    ;;
  '' | 0 | false) ;;
  *)
    echo "generic-envoy: XDS_SERVER_IDENTITY=$XDS_SERVER_IDENTITY is not 1, true, 0 or false" >&2
    exit 1
    ;;
esac

if [ -n "${ENVOY_BOOTSTRAP_S3:-}" ]; then
  writable_bootstrap_dir
  S3_CONFIG_LOADER_TEMPLATE_ENV=${S3_CONFIG_LOADER_TEMPLATE_ENV:-PROXY,XDS_HOST} \
    s3-config-loader get "$ENVOY_BOOTSTRAP_S3" "$bootstrap" --validate "$envoy --mode validate -c {}"
elif [ -z "${XDS_SERVER_PROXY:-}" ] && [ -f "$bootstrap" ]; then
  : # rendered before this container started
else
  : "${XDS_SERVER_PROXY:?set XDS_SERVER_PROXY (the proxy role) or ENVOY_BOOTSTRAP_S3}"
  : "${XDS_SERVER_XDS:?set XDS_SERVER_XDS (the control plane, HOST:PORT) or ENVOY_BOOTSTRAP_S3}"
  writable_bootstrap_dir
  # Envoy's admin stays on loopback; the task's network gets only GET /stats/prometheus and
  # GET /ready, on 9902. The bootstrap is written beside its final place and renamed, so a
  # restart never reads half a file. (Envoy reads the format from the extension: the staged
  # name keeps it.)
  staged="$bootstrap_dir/.new-$(basename "$bootstrap")"
  XDS_SERVER_ENVOY_STATS_LISTEN=${XDS_SERVER_ENVOY_STATS_LISTEN:-0.0.0.0:9902} \
    xds-server bootstrap > "$staged"
  "$envoy" --mode validate -c "$staged" > /dev/null
  mv "$staged" "$bootstrap"
fi

# shellcheck disable=SC2086 # ENVOY_ARGS is a list of flags
exec "$envoy" -c "$bootstrap" ${ENVOY_ARGS:-}
