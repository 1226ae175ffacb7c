# App Mesh style transparent proxying (var.transparent_egress), apart from main.tf and from any
# provider so tests render it with Terraform itself (tests/tests/infra_files.rs).
#
# ECS does the redirect for a task definition with a proxyConfiguration of type APPMESH: in the
# task's network namespace (awsvpc only, which the task definition has) its App Mesh CNI plugin
# installs nat rules: outbound TCP to an address not of the task goes to ProxyEgressPort unless
# it comes from IgnoredUID or IgnoredGID or goes to EgressIgnoredIPs/Ports; inbound TCP to AppPorts goes to
# ProxyIngressPort. Any proxy will do, so the generic Envoy does, run as that UID: its own
# connections to the upstreams would otherwise be redirected back to itself.

locals {
  transparent = var.transparent_egress != null
  envoy_uid   = "1337"
  # Containers that need the network before Envoy listens (the bootstrap writer) run in this
  # group; so does no app container, whose egress would bypass Envoy.
  envoy_gid = "1337"
  app_ports = local.transparent ? distinct(var.transparent_egress.app_ports) : []
  proxy_configuration = local.transparent ? {
    type           = "APPMESH"
    container_name = "envoy"
    # ECS refuses an empty property: EgressIgnoredPorts only when there are some.
    properties = { for k, v in {
      IgnoredUID       = local.envoy_uid
      IgnoredGID       = local.envoy_gid
      ProxyIngressPort = "15000"
      ProxyEgressPort  = "15001"
      AppPorts         = join(",", [for p in local.app_ports : tostring(p)])
      # The task metadata and credentials endpoints: the containers' own AWS access.
      EgressIgnoredIPs = join(",", distinct(concat(["169.254.170.2", "169.254.169.254"], var.transparent_egress.egress_ignored_ips)))
      # 443 by default (variables.tf): the app's AWS SDK calls, ECS Exec and other HTTPS leave
      # directly, as Envoy has no passthrough for what the catalog does not name.
      EgressIgnoredPorts = join(",", [for p in distinct(var.transparent_egress.egress_ignored_ports) : tostring(p)])
    } : k => v if v != "" }
  } : null
  # Fargate's task volumes belong to root (0755). With identity Envoy's own container writes
  # its bootstrap and certificate there, so as UID 1337 it needs the volume made its own first;
  # without, the bootstrap container writes as root and Envoy only reads (mode 0644).
  envoy_config_owner_container = {
    name                   = "envoy-config-owner"
    image                  = var.loader_image
    essential              = false
    user                   = "0"
    readonlyRootFilesystem = true
    entryPoint             = ["chown", "${local.envoy_uid}:${local.envoy_uid}", "/etc/envoy"]
    mountPoints            = [{ sourceVolume = "envoy-config", containerPath = "/etc/envoy" }]
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "envoy-config-owner" })
    }
  }
  # Envoy is healthy once it has its listeners (its /ready on the stats listener, 9902, answers
  # 200 LIVE only then): the app containers wait for it (task.tf). bash's /dev/tcp asks, so the
  # check needs no HTTP client in the image (envoyproxy/envoy, Ubuntu, has bash).
  envoy_health_check = {
    command = [
      "CMD", "bash", "-c",
      "exec 3<>/dev/tcp/127.0.0.1/9902 && printf 'GET /ready HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1.1 200' <&3",
    ]
    interval    = 5
    timeout     = 2
    retries     = 3
    startPeriod = 10
  }
}
