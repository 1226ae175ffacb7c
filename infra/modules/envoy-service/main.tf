# One service behind the generic Envoy, which gets everything but its bootstrap from xds-server;
# the application's containers run beside it. Registered in Cloud Map. The service's own
# catalog fragment (its proxy role and upstreams) is uploaded beside the other services'
# fragments, so the control plane serves it for as long as the service exists.
#
# With identity (the default, for a control plane with require_identity) the Envoy container
# does it all itself, as the generic image's entrypoint does with XDS_SERVER_IDENTITY=1: it
# proves the task role to the control plane (`xds-server identity`), generates its bootstrap
# (node.id = task ARN, node.cluster = the service) with mutual TLS, keeps `identity --renew`
# running beside Envoy and becomes Envoy. The task role is the proxy's identity: the fragment
# names it (the template's task_role_arn). One container, nothing read from S3: an init
# container would need the identity files from a second one plus a renewer as a third.
# Without identity, an init container (s3-config-loader) renders the bootstrap from the
# template in S3 with the task's metadata, and Envoy starts from that file.

data "aws_region" "current" {}

locals {
  log_options = {
    awslogs-group  = module.base.log_group_name
    awslogs-region = data.aws_region.current.region
  }
  # The catalog `tls` of the service's listeners (JSON, which is YAML), for the template's
  # $${listener_tls}: mesh mTLS (callers must hold a mesh identity from this network's control
  # plane), edge TLS with an ACM certificate, or none.
  listener_tls = {
    none = "null"
    mesh = jsonencode({
      mode               = var.listener_tls.mode
      certificate        = "mesh"
      client_certificate = { trust = "mesh", allow = var.listener_tls.allow }
    })
    acm = jsonencode({
      mode        = var.listener_tls.mode
      certificate = { acm = { arn = var.listener_tls.certificate } }
    })
  }[contains(["none", "mesh"], var.listener_tls.certificate) ? var.listener_tls.certificate : "acm"]
  catalog_fragment = templatefile(var.catalog_template, merge(var.catalog_vars, {
    task_role_arn = module.base.task_role_arn
    listener_tls  = local.listener_tls
  }))
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "ReadBootstrapTemplate"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.config_bucket}/${var.bootstrap_key}"]
  }
  statement {
    sid       = "DecryptConfig"
    actions   = ["kms:Decrypt"]
    resources = [var.config_kms_key_arn]
  }
}

# The fragment is checked against the fragments already under the prefix before it is uploaded,
# as the control plane will take it (`xds-server validate FRAGMENT --with s3://BUCKET/PREFIX/`):
# a route to an upstream no fragment defines, a name another service owns, or an upstream
# removed while another service routes to it fails the apply here, instead of being refused by
# the control plane after the upload. It runs where Terraform runs, with the same credentials,
# whenever the rendered fragment changes.
#
# Fragments that change together in one apply (a new upstream in A, a route to it in B) are
# checked against the prefix with each other's new versions: catalog_fragments_in_apply gives
# the others' rendered fragments (another envoy-service's catalog_fragment output), which replace theirs under the
# prefix in the check (`--with PREFIX --with DIR`). The uploads then go in any order: the
# control plane keeps B's last good version until A's lands, then serves both.
resource "terraform_data" "validate_catalog" {
  count            = var.xds_server_command == "" ? 0 : 1
  triggers_replace = [local.catalog_fragment, var.catalog_fragments_in_apply]

  provisioner "local-exec" {
    interpreter = ["/bin/sh", "-c"]
    command     = <<-EOT
      set -eu
      dir=$(mktemp -d)
      trap 'rm -rf "$dir"' EXIT
      mkdir "$dir/apply"
      printf '%s' "$FRAGMENT" > "$dir/$FRAGMENT_NAME"
      # PENDING: a name line, then the fragment in base64 on one line, for each.
      printf '%s' "$PENDING" | while read -r name && read -r text; do
        printf '%s' "$text" | base64 -d > "$dir/apply/$name"
      done
      $XDS_SERVER validate "$dir/$FRAGMENT_NAME" --as "$FRAGMENT_NAME" --with "$CATALOG_PREFIX" --with "$dir/apply"
    EOT
    environment = {
      FRAGMENT       = local.catalog_fragment
      FRAGMENT_NAME  = "${var.service_name}.yaml"
      PENDING        = join("", [for name, text in var.catalog_fragments_in_apply : "${name}\n${base64encode(text)}\n"])
      CATALOG_PREFIX = "s3://${var.config_bucket}/${var.catalog_prefix}"
      XDS_SERVER     = var.xds_server_command
    }
  }
}

resource "aws_s3_object" "catalog" {
  depends_on = [terraform_data.validate_catalog]

  bucket       = var.config_bucket
  key          = "${var.catalog_prefix}${var.service_name}.yaml"
  content      = local.catalog_fragment
  content_type = "application/yaml"
  kms_key_id   = var.config_kms_key_arn
  tags         = var.tags

  lifecycle {
    precondition {
      condition     = !var.identity || strcontains(local.catalog_fragment, module.base.task_role_arn)
      error_message = "With identity, the catalog fragment must name the task role (the template's $${task_role_arn}) in proxies.${var.service_name}.identity.iam_roles: no one else may get that proxy's certificate."
    }
  }
}

module "base" {
  source             = "../ecs-task-base"
  name               = "${var.name}-${var.service_name}"
  log_group_name     = "/ecs/${var.name}/${var.service_name}"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = var.logs_kms_key_arn
  # With identity the task reads nothing: proving its role needs no permission.
  task_policy_json = var.identity ? "" : data.aws_iam_policy_document.task.json
  # The app containers' `secrets` (containers.tf).
  execution_policy_json = local.app_secrets_policy_json
  tags                  = var.tags
}

resource "aws_security_group" "this" {
  name        = "${var.name}-${var.service_name}"
  description = "Tasks of ${var.service_name} in ${var.name}"
  vpc_id      = var.vpc_id
  tags        = var.tags

  dynamic "ingress" {
    for_each = var.listener_ports
    content {
      description = "Envoy listener ${ingress.value}"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = [var.vpc_cidr_block]
    }
  }

  # With transparent_egress callers dial the app's own ports, which ECS redirects to Envoy.
  dynamic "ingress" {
    for_each = local.app_ports
    content {
      description = "App port ${ingress.value}, through Envoy's ingress listener"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = [var.vpc_cidr_block]
    }
  }

  ingress {
    description = "Envoy's stats listener (GET /stats/prometheus, /ready); the admin stays on loopback"
    from_port   = 9902
    to_port     = 9902
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  egress {
    description = "S3 and the image registry"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "xds-server and the upstreams, inside the VPC"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-${var.service_name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "512"
  memory                   = "1024"
  execution_role_arn       = module.base.execution_role_arn
  task_role_arn            = module.base.task_role_arn

  volume {
    name = "envoy-config"
  }

  lifecycle {
    precondition {
      condition     = !var.identity || startswith(var.xds_ca_certificate, "-----BEGIN CERTIFICATE-----")
      error_message = "identity needs xds_ca_certificate, the control plane's CA certificate (PEM: the xds-server module's ca_certificate_pem)."
    }
  }

  # Transparent egress and ingress (proxy.tf): ECS redirects the task's TCP to Envoy.
  dynamic "proxy_configuration" {
    for_each = local.proxy_configuration == null ? [] : [local.proxy_configuration]
    content {
      type           = proxy_configuration.value.type
      container_name = proxy_configuration.value.container_name
      properties     = proxy_configuration.value.properties
    }
  }

  # The init containers, Envoy and the app's (task.tf).
  container_definitions = jsonencode(local.container_definitions)
  tags                  = var.tags
}

resource "aws_service_discovery_service" "this" {
  name = var.service_name
  dns_config {
    namespace_id = var.namespace_id
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {}
  tags = var.tags
}

resource "aws_ecs_service" "this" {
  name            = "${var.name}-${var.service_name}"
  cluster         = var.cluster_arn
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = var.desired_count
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = concat([aws_security_group.this.id], var.security_group_ids)
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.this.arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = var.tags
}
