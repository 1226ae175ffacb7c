# The task's containers in the order they start: the init containers, Envoy, the app's
# (containers.tf). Apart from main.tf and from any provider so tests render them with Terraform
# itself (tests/tests/infra_files.rs).

locals {
  bootstrap = "/etc/envoy/envoy.yaml"
  # The xds-server module's port.
  xds_address = "${var.xds_host}:18000"
  # The generic image's entrypoint with XDS_SERVER_IDENTITY=1 (infra/docker/envoy/entrypoint.sh).
  identity_environment = [
    { name = "ENVOY_BOOTSTRAP", value = local.bootstrap },
    { name = "XDS_SERVER_PROXY", value = var.service_name },
    { name = "XDS_SERVER_XDS", value = local.xds_address },
    { name = "XDS_SERVER_IDENTITY", value = "1" },
    { name = "XDS_SERVER_XDS_CA_PEM", value = var.xds_ca_certificate },
  ]
  bootstrap_container = {
    name      = "bootstrap"
    image     = var.loader_image
    essential = false
    # Fargate's task volumes belong to root (0755): the one writer runs as root, Envoy reads.
    # With transparent egress ECS has installed its redirect before any container starts, so
    # this S3 GET would go to Envoy's egress port, where nothing listens yet: the group is the
    # one the redirect ignores (IgnoredGID, proxy.tf).
    user                   = local.transparent ? "0:${local.envoy_gid}" : "0"
    readonlyRootFilesystem = true
    command = [
      "get", "s3://${var.config_bucket}/${var.bootstrap_key}", local.bootstrap,
    ]
    # Templates read only the environment variables named here (or prefixed S3CL_): the
    # bootstrap template's ${PROXY} and ${XDS_HOST}, not the task's credentials.
    environment = [
      { name = "PROXY", value = var.service_name },
      { name = "XDS_HOST", value = var.xds_host },
      { name = "S3_CONFIG_LOADER_TEMPLATE_ENV", value = "PROXY,XDS_HOST" },
    ]
    mountPoints = [{ sourceVolume = "envoy-config", containerPath = "/etc/envoy" }]
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "bootstrap" })
    }
  }
  # What runs before Envoy: the bootstrap writer (without identity), or the change of owner of
  # Envoy's volume (identity with transparent egress, proxy.tf; it needs no network).
  init_containers = concat(
    var.identity ? [] : [local.bootstrap_container],
    var.identity && local.transparent ? [local.envoy_config_owner_container] : [],
  )
  envoy_container = {
    name                   = "envoy"
    image                  = var.envoy_image
    essential              = true
    readonlyRootFilesystem = true
    # The UID that ECS's redirect ignores (proxy.tf); the image's default user otherwise. With
    # identity, what the entrypoint fetches (STS, the control plane's certificate) runs as it too.
    user        = local.transparent ? local.envoy_uid : null
    dependsOn   = length(local.init_containers) == 0 ? null : [for c in local.init_containers : { containerName = c.name, condition = "SUCCESS" }]
    environment = var.identity ? local.identity_environment : [{ name = "ENVOY_BOOTSTRAP", value = local.bootstrap }]
    # With identity Envoy's container writes its bootstrap and certificate there (/etc/envoy/identity).
    mountPoints = [{ sourceVolume = "envoy-config", containerPath = "/etc/envoy", readOnly = !var.identity }]
    portMappings = concat(
      [for p in var.listener_ports : { containerPort = p, protocol = "tcp" }],
      [{ containerPort = 9902, protocol = "tcp" }],
    )
    # With transparent egress every connection of the app goes through Envoy, so the app
    # starts once Envoy has its listeners (proxy.tf).
    healthCheck = local.transparent ? local.envoy_health_check : null
    # ecs-sd scrapes Envoy's own metrics.
    dockerLabels = {
      PROMETHEUS_EXPORTER_PORT = "9902"
      PROMETHEUS_EXPORTER_PATH = "/stats/prometheus"
    }
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "envoy" })
    }
  }
  container_definitions = concat(local.init_containers, [local.envoy_container], [
    for c in local.app_container_definitions : merge(c, {
      dependsOn = local.transparent ? [{ containerName = "envoy", condition = "HEALTHY" }] : null
    })
  ])
}
