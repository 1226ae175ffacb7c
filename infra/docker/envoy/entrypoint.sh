#!/bin/sh
# The generic Envoy image's entrypoint: get a bootstrap, check it, then become Envoy.
#
# From S3 (a template rendered with the task's metadata and the environment variables PROXY and
# XDS_HOST, or those S3_CONFIG_LOADER_TEMPLATE_ENV names instead, and any prefixed S3CL_):
#   ENVOY_BOOTSTRAP_S3=s3://BUCKET/envoy/bootstrap.yaml.tmpl
# or generated here for a proxy role of the catalog:
#   XDS_SERVER_PROXY=intdemo XDS_SERVER_XDS=xds.prism-test.atala.local:18000 [XDS_SERVER_DELTA=true]
# or, with neither set, the file at ENVOY_BOOTSTRAP as it is (rendered by an init container that
# ran `s3-config-loader get`, as infra/modules/envoy-service does).
# node.id is the ECS task ARN (from ECS_CONTAINER_METADATA_URI_V4), node.cluster the proxy role.
# ENVOY (default: envoy), ENVOY_BOOTSTRAP (default: /etc/envoy/envoy.yaml), ENVOY_ARGS;
# XDS_SERVER_ENVOY_ADMIN (default 127.0.0.1:9901), XDS_SERVER_ENVOY_STATS_LISTEN (0.0.0.0:9902).
set -eu

envoy=${ENVOY:-envoy}
bootstrap=${ENVOY_BOOTSTRAP:-/etc/envoy/envoy.yaml}
[ -d "$(dirname "$bootstrap")" ] || mkdir -p "$(dirname "$bootstrap")"

if [ -n "${ENVOY_BOOTSTRAP_S3:-}" ]; then
  S3_CONFIG_LOADER_TEMPLATE_ENV=${S3_CONFIG_LOADER_TEMPLATE_ENV:-PROXY,XDS_HOST} \
    s3-config-loader get "$ENVOY_BOOTSTRAP_S3" "$bootstrap" --validate "$envoy --mode validate -c {}"
elif [ -z "${XDS_SERVER_PROXY:-}" ] && [ -f "$bootstrap" ]; then
  : # rendered before this container started
else
  : "${XDS_SERVER_PROXY:?set XDS_SERVER_PROXY (the proxy role) or ENVOY_BOOTSTRAP_S3}"
  : "${XDS_SERVER_XDS:?set XDS_SERVER_XDS (the control plane, HOST:PORT) or ENVOY_BOOTSTRAP_S3}"
  # Envoy's admin stays on loopback; the task's network gets only GET /stats/prometheus and
  # GET /ready, on 9902. The bootstrap is written beside its final place and renamed, so a
  # restart never reads half a file. (Envoy reads the format from the extension: the staged
  # name keeps it.)
  staged="$(dirname "$bootstrap")/.new-$(basename "$bootstrap")"
  XDS_SERVER_ENVOY_STATS_LISTEN=${XDS_SERVER_ENVOY_STATS_LISTEN:-0.0.0.0:9902} \
    xds-server bootstrap > "$staged"
  "$envoy" --mode validate -c "$staged" > /dev/null
  mv "$staged" "$bootstrap"
fi

# shellcheck disable=SC2086 # ENVOY_ARGS is a list of flags
exec "$envoy" -c "$bootstrap" ${ENVOY_ARGS:-}
