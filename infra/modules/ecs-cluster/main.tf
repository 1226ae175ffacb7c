# An ECS cluster with Fargate and an EC2 capacity provider: an autoscaling group of ECS-optimised
# Amazon Linux 2023 instances, scaled by ECS (managed scaling). Instances carry the tag
# Prometheus=true, which the monitoring's EC2 discovery selects, and run the node exporter as an
# ECS daemon service on port 9100. The team's SSH keys are authorised for ec2-user; the
# instances sit in private subnets and are reached through SSM Session Manager.

data "aws_region" "current" {}

resource "aws_ecs_cluster" "this" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = var.tags
}

data "aws_ssm_parameter" "ami" {
  name = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
}

data "aws_iam_policy_document" "instance_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name               = "${var.name}-ecs-instance"
  assume_role_policy = data.aws_iam_policy_document.instance_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "ecs" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "instance" {
  name = "${var.name}-ecs-instance"
  role = aws_iam_role.instance.name
  tags = var.tags
}

resource "aws_security_group" "instance" {
  name        = "${var.name}-ecs-instance"
  description = "ECS container instances of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = var.tags

  ingress {
    description = "Node exporter, scraped by Prometheus"
    from_port   = 9100
    to_port     = 9100
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  egress {
    description = "Images and AWS APIs (HTTPS)"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "The tasks' upstreams and the control plane, inside the VPC"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
}

resource "aws_launch_template" "instance" {
  name_prefix            = "${var.name}-ecs-"
  image_id               = data.aws_ssm_parameter.ami.value
  instance_type          = var.instance_type
  key_name               = var.key_name != "" ? var.key_name : null
  vpc_security_group_ids = [aws_security_group.instance.id]
  # Only joins the cluster and authorises the team's keys: everything else reaches tasks from S3
  # (s3-config-loader), not here.
  user_data = base64encode(join("\n", [
    "#!/bin/bash",
    "echo ECS_CLUSTER=${aws_ecs_cluster.this.name} >> /etc/ecs/ecs.config",
    "install -d -m 700 -o ec2-user -g ec2-user /home/ec2-user/.ssh",
    "cat >> /home/ec2-user/.ssh/authorized_keys <<'KEYS'",
    var.ssh_authorized_keys,
    "KEYS",
    "",
  ]))

  iam_instance_profile {
    arn = aws_iam_instance_profile.instance.arn
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 1: containers cannot reach the instance's credentials; tasks use their task roles.
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 30
      volume_type = "gp3"
      encrypted   = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-ecs", Prometheus = "true" })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "instance" {
  name_prefix           = "${var.name}-ecs-"
  vpc_zone_identifier   = var.subnet_ids
  min_size              = var.min_size
  max_size              = var.max_size
  protect_from_scale_in = true

  launch_template {
    id      = aws_launch_template.instance.id
    version = "$Latest"
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_ecs_capacity_provider" "ec2" {
  name = "${var.name}-ec2"
  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.instance.arn
    managed_termination_protection = "ENABLED"
    managed_scaling {
      status          = "ENABLED"
      target_capacity = 90
    }
  }
  tags = var.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT", aws_ecs_capacity_provider.ec2.name]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

# The node exporter on every container instance (host network and PID namespace, the host's
# root read-only), for the monitoring's EC2 discovery.
data "aws_iam_policy_document" "node_exporter" {
  statement {
    sid       = "NoAwsAccess"
    effect    = "Deny"
    actions   = ["*"]
    resources = ["*"]
  }
}

module "node_exporter" {
  source             = "../ecs-task-base"
  name               = "${var.name}-node-exporter"
  log_group_name     = "/ecs/${var.name}/node-exporter"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = var.logs_kms_key_arn
  task_policy_json   = data.aws_iam_policy_document.node_exporter.json
  tags               = var.tags
}

resource "aws_ecs_task_definition" "node_exporter" {
  #checkov:skip=CKV_AWS_335:the node exporter reads the host's processes to report on them
  family                   = "${var.name}-node-exporter"
  requires_compatibilities = ["EC2"]
  network_mode             = "host"
  pid_mode                 = "host"
  cpu                      = "128"
  memory                   = "128"
  execution_role_arn       = module.node_exporter.execution_role_arn
  task_role_arn            = module.node_exporter.task_role_arn

  volume {
    name      = "host-root"
    host_path = "/"
  }

  container_definitions = jsonencode([{
    name                   = "node-exporter"
    image                  = var.node_exporter_image
    essential              = true
    readonlyRootFilesystem = true
    command                = ["--path.rootfs=/host", "--web.listen-address=:9100"]
    mountPoints            = [{ sourceVolume = "host-root", containerPath = "/host", readOnly = true }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = module.node_exporter.log_group_name
        awslogs-region        = data.aws_region.current.region
        awslogs-stream-prefix = "node-exporter"
      }
    }
  }])
  tags = var.tags
}

resource "aws_ecs_service" "node_exporter" {
  name                = "${var.name}-node-exporter"
  cluster             = aws_ecs_cluster.this.arn
  task_definition     = aws_ecs_task_definition.node_exporter.arn
  launch_type         = "EC2"
  scheduling_strategy = "DAEMON"
  tags                = var.tags
}
