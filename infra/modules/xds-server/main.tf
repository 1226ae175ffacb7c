# The control plane: xds-server tasks on Fargate behind an internal network load balancer
# (gRPC on 18000), registered in Cloud Map as xds.<namespace>, reading the catalog from S3: by
# default every fragment under xds/catalog.d/, one per service deployment (envoy-service writes
# its own). It also publishes the generic Envoy's bootstrap template, which names it.
# The task role may read the catalog, discover Cloud Map instances and describe ECS tasks: nothing
# else.

data "aws_region" "current" {}

locals {
  catalog_is_prefix = endswith(var.catalog_key, "/")
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "ReadCatalog"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.catalog_bucket}/${var.catalog_key}${local.catalog_is_prefix ? "*" : ""}"]
  }
  dynamic "statement" {
    for_each = local.catalog_is_prefix ? [1] : []
    content {
      sid       = "ListCatalogFragments"
      actions   = ["s3:ListBucket"]
      resources = ["arn:aws:s3:::${var.catalog_bucket}"]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${var.catalog_key}*"]
      }
    }
  }
  statement {
    sid       = "DecryptCatalog"
    actions   = ["kms:Decrypt"]
    resources = [var.config_kms_key_arn]
  }
  statement {
    sid       = "DiscoverCloudMap"
    actions   = ["servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision"]
    resources = ["*"]
  }
  statement {
    sid       = "DescribeTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }
  dynamic "statement" {
    for_each = length(var.ecs_clusters) > 0 ? [1] : []
    content {
      sid       = "ListTasks"
      actions   = ["ecs:ListTasks", "ecs:DescribeTasks"]
      resources = ["*"]
      condition {
        test     = "ArnEquals"
        variable = "ecs:cluster"
        values   = var.ecs_clusters
      }
    }
  }
}

module "base" {
  source             = "../ecs-task-base"
  name               = "${var.name}-xds-server"
  log_group_name     = "/ecs/${var.name}/xds-server"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = var.logs_kms_key_arn
  task_policy_json   = data.aws_iam_policy_document.task.json
  tags               = var.tags
}

# The generic Envoy's bootstrap: `xds-server bootstrap` with placeholders that the init container
# of each Envoy task fills in (s3-config-loader get): the proxy role, the task ARN and this
# control plane's address (XDS_HOST). tests/tests/infra.rs checks it against the generator.
resource "aws_s3_object" "envoy_bootstrap" {
  bucket       = var.catalog_bucket
  key          = var.bootstrap_template_key
  source       = "${path.module}/files/envoy-bootstrap.yaml.tmpl"
  source_hash  = filemd5("${path.module}/files/envoy-bootstrap.yaml.tmpl")
  content_type = "application/yaml"
  kms_key_id   = var.config_kms_key_arn
  tags         = var.tags
}

resource "aws_security_group" "this" {
  name        = "${var.name}-xds-server"
  description = "xds-server tasks of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = var.tags

  ingress {
    description = "xDS (gRPC) from the Envoys"
    from_port   = 18000
    to_port     = 18000
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  ingress {
    description = "Admin: metrics for Prometheus, readiness for the load balancer"
    from_port   = 18001
    to_port     = 18001
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  egress {
    description = "AWS APIs (S3, Cloud Map, ECS) and the image registry"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-xds-server"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "512"
  memory                   = "1024"
  execution_role_arn       = module.base.execution_role_arn
  task_role_arn            = module.base.task_role_arn
  container_definitions = jsonencode([{
    name                   = "xds-server"
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    environment = [
      { name = "XDS_SERVER_CATALOG", value = "s3://${var.catalog_bucket}/${var.catalog_key}" },
      { name = "XDS_SERVER_LOG_FORMAT", value = "json" },
    ]
    portMappings = [
      { containerPort = 18000, protocol = "tcp" },
      { containerPort = 18001, protocol = "tcp" },
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = module.base.log_group_name
        awslogs-region        = data.aws_region.current.region
        awslogs-stream-prefix = "xds-server"
      }
    }
    # Picked up by ecs-sd (prometheus-ecs-sd's settings).
    dockerLabels = {
      PROMETHEUS_EXPORTER_PORT = "18001"
      PROMETHEUS_EXPORTER_PATH = "/metrics"
    }
    stopTimeout = 10
  }])
  tags = var.tags
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:a TCP load balancer in front of gRPC streams; the tasks log every stream themselves
  name                             = "${var.name}-xds"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = true
  tags                             = var.tags
}

resource "aws_lb_target_group" "this" {
  name        = "${var.name}-xds"
  port        = 18000
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # Streams are long-lived: give them time to move before a task leaves.
  deregistration_delay = 30

  health_check {
    protocol = "HTTP"
    port     = "18001"
    path     = "/readyz"
  }
  tags = var.tags
}

resource "aws_lb_listener" "this" {
  load_balancer_arn = aws_lb.this.arn
  port              = 18000
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
  tags = var.tags
}

resource "aws_service_discovery_service" "this" {
  name = "xds"
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
  name            = "${var.name}-xds-server"
  cluster         = var.cluster_arn
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = var.replicas
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.this.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = "xds-server"
    container_port   = 18000
  }

  service_registries {
    registry_arn = aws_service_discovery_service.this.arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_lb_listener.this]
  tags       = var.tags
}
