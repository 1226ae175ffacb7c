# Monitoring of an environment, as one Fargate task: Prometheus (EC2 hosts tagged
# Prometheus=true, ECS tasks through ecs-sd), ecs-sd, and Grafana with provisioned dashboards for
# the control plane and Envoy. Their configuration lives in the config bucket under monitoring/
# and reaches the task through s3-config-loader (once before start, then kept fresh, reloading
# Prometheus), never through user data. Prometheus' storage is the task's own: history restarts
# with the task.

data "aws_region" "current" {}

locals {
  prefix     = "monitoring/"
  config_dir = "/etc/monitoring"
  files      = "${path.module}/files/grafana"
  log_options = {
    awslogs-group  = module.base.log_group_name
    awslogs-region = data.aws_region.current.region
  }
  volume = [{ sourceVolume = "monitoring", containerPath = local.config_dir }]
}

resource "aws_s3_object" "prometheus" {
  bucket = var.config_bucket
  key    = "${local.prefix}prometheus/prometheus.yml"
  content = templatefile("${path.module}/files/prometheus.yml.tftpl", {
    name   = var.name
    region = data.aws_region.current.region
    vpc_id = var.vpc_id
  })
  content_type = "application/yaml"
  tags         = var.tags
}

resource "aws_s3_object" "grafana" {
  for_each = fileset(local.files, "**")
  bucket   = var.config_bucket
  key      = "${local.prefix}grafana/${each.value}"
  source   = "${local.files}/${each.value}"
  # The bucket encrypts with KMS, so ETags are not MD5s: source_hash notices changed files.
  source_hash = filemd5("${local.files}/${each.value}")
  tags        = var.tags
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "ReadConfig"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.config_bucket}/${local.prefix}*"]
  }
  statement {
    sid       = "ListConfig"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.config_bucket}"]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.prefix}*"]
    }
  }
  statement {
    sid       = "DecryptConfig"
    actions   = ["kms:Decrypt"]
    resources = [var.config_kms_key_arn]
  }
  statement {
    sid = "DiscoverHosts"
    actions = [
      "ec2:DescribeInstances", "ec2:DescribeAvailabilityZones", "ecs:DescribeTaskDefinition",
      "ssm:DescribeInstanceInformation",
    ]
    resources = ["*"]
  }
  # Grafana's CloudWatch datasource (the RDS dashboard): metric reads only. Neither action
  # supports resource-level permissions, hence "*".
  statement {
    sid       = "ReadMetrics"
    actions   = ["cloudwatch:GetMetricData", "cloudwatch:ListMetrics"]
    resources = ["*"]
  }
  statement {
    sid       = "ListTasks"
    actions   = ["ecs:ListTasks"]
    resources = ["*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [var.cluster_arn]
    }
  }
  statement {
    sid     = "DescribeTasks"
    actions = ["ecs:DescribeTasks", "ecs:DescribeContainerInstances"]
    resources = [
      "${replace(var.cluster_arn, ":cluster/", ":task/")}/*",
      "${replace(var.cluster_arn, ":cluster/", ":container-instance/")}/*",
    ]
  }
}

# Grafana's admin password, handed to the container by ECS (never in the task definition).
resource "aws_ssm_parameter" "grafana_admin_password" {
  name   = "/${var.name}/monitoring/grafana-admin-password"
  type   = "SecureString"
  value  = var.grafana_admin_password
  key_id = var.config_kms_key_arn
  tags   = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "ReadGrafanaPassword"
    actions   = ["ssm:GetParameters"]
    resources = [aws_ssm_parameter.grafana_admin_password.arn]
  }
  statement {
    sid       = "DecryptGrafanaPassword"
    actions   = ["kms:Decrypt"]
    resources = [var.config_kms_key_arn]
  }
}

module "base" {
  source                = "../ecs-task-base"
  name                  = "${var.name}-monitoring"
  log_group_name        = "/ecs/${var.name}/monitoring"
  log_retention_days    = var.log_retention_days
  logs_kms_key_arn      = var.logs_kms_key_arn
  task_policy_json      = data.aws_iam_policy_document.task.json
  execution_policy_json = data.aws_iam_policy_document.execution.json
  tags                  = var.tags
}

resource "aws_security_group" "this" {
  name        = "${var.name}-monitoring"
  description = "Prometheus and Grafana of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = var.tags

  ingress {
    description = "Grafana"
    from_port   = 3000
    to_port     = 3000
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  ingress {
    description = "Prometheus"
    from_port   = 9090
    to_port     = 9090
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  egress {
    description = "AWS APIs, S3 and the image registry"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Scrapes inside the VPC"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-monitoring"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "1024"
  memory                   = "2048"
  execution_role_arn       = module.base.execution_role_arn
  task_role_arn            = module.base.task_role_arn

  volume {
    name = "monitoring"
  }

  container_definitions = jsonencode([
    # Fargate's task volumes belong to root (0755): the writers (the two loaders, ecs-sd) run as
    # root; Prometheus and Grafana only read what they write.
    {
      name        = "config-init"
      user        = "0"
      image       = var.loader_image
      essential   = false
      command     = ["sync", "s3://${var.config_bucket}/${local.prefix}", local.config_dir, "--once"]
      mountPoints = local.volume
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { awslogs-stream-prefix = "config-init" })
      }
    },
    {
      name      = "config"
      user      = "0"
      image     = var.loader_image
      essential = true
      command = [
        "sync", "s3://${var.config_bucket}/${local.prefix}", local.config_dir,
        "--interval", "30s", "--post", "http://127.0.0.1:9090/-/reload",
      ]
      dependsOn   = [{ containerName = "config-init", condition = "SUCCESS" }]
      mountPoints = local.volume
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { awslogs-stream-prefix = "config" })
      }
    },
    {
      name      = "ecs-sd"
      user      = "0"
      image     = var.ecs_sd_image
      essential = true
      command = [
        "--directory", "${local.config_dir}/ecs-sd", "--interval", "60",
        "--cluster-arns", var.cluster_arn, "--http-listen", "127.0.0.1:9099",
      ]
      dependsOn   = [{ containerName = "config-init", condition = "SUCCESS" }]
      mountPoints = local.volume
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { awslogs-stream-prefix = "ecs-sd" })
      }
    },
    {
      name      = "prometheus"
      image     = var.prometheus_image
      essential = true
      command = [
        "--config.file=${local.config_dir}/prometheus/prometheus.yml",
        "--storage.tsdb.path=/prometheus", "--web.enable-lifecycle",
      ]
      dependsOn    = [{ containerName = "config-init", condition = "SUCCESS" }]
      mountPoints  = local.volume
      portMappings = [{ containerPort = 9090, protocol = "tcp" }]
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { awslogs-stream-prefix = "prometheus" })
      }
    },
    {
      name      = "grafana"
      image     = var.grafana_image
      essential = true
      environment = [
        { name = "GF_PATHS_PROVISIONING", value = "${local.config_dir}/grafana/provisioning" },
        { name = "GF_USERS_ALLOW_SIGN_UP", value = "false" },
        # The CloudWatch datasource's region (provisioning/datasources/cloudwatch.yaml).
        { name = "AWS_REGION", value = data.aws_region.current.region },
      ]
      secrets = [
        { name = "GF_SECURITY_ADMIN_PASSWORD", valueFrom = aws_ssm_parameter.grafana_admin_password.arn },
      ]
      dependsOn    = [{ containerName = "config-init", condition = "SUCCESS" }]
      mountPoints  = local.volume
      portMappings = [{ containerPort = 3000, protocol = "tcp" }]
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { awslogs-stream-prefix = "grafana" })
      }
    },
  ])
  tags = var.tags
}

resource "aws_service_discovery_service" "this" {
  name = "monitoring"
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
  name            = "${var.name}-monitoring"
  cluster         = var.cluster_arn
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = 1
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.this.id]
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
