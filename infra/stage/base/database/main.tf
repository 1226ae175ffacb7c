# The network's PostgreSQL database, beside the network it lives in (the seed's "perhaps adding
# it to the vpc directory"). Deploy it with the network's name: `env.sh -a prism-test`.
# Services join the security group `client_security_group_id` to reach it and take the
# credentials into their tasks as ECS `secrets` from `secret_arn` (never as plain environment).

data "terraform_remote_state" "vpc" {
  backend = "s3"
  config = {
    bucket = var.state_bucket
    key    = "infra/stage/base/vpc/${var.env_name}/terraform.tfstate"
    region = var.region
  }
}

locals {
  vpc  = data.terraform_remote_state.vpc.outputs
  tags = { Environment = var.env_name, ManagedBy = "terraform" }
}

# Tasks that use the database join this group; the database admits it (and only the groups given).
resource "aws_security_group" "clients" {
  #checkov:skip=CKV2_AWS_5:attached by the service roots to their tasks, not in this root
  name        = "${var.env_name}-database-clients"
  description = "Clients of the database ${var.env_name}"
  vpc_id      = local.vpc.vpc_id
  tags        = local.tags

  egress {
    description = "PostgreSQL, inside the VPC"
    from_port   = var.port
    to_port     = var.port
    protocol    = "tcp"
    cidr_blocks = [local.vpc.vpc_cidr_block]
  }
}

module "database" {
  source                     = "../../../modules/database"
  name                       = var.env_name
  vpc_id                     = local.vpc.vpc_id
  subnet_ids                 = local.vpc.private_subnet_ids
  allowed_security_group_ids = concat([aws_security_group.clients.id], var.allowed_security_group_ids)
  engine_version             = var.engine_version
  instance_class             = var.instance_class
  port                       = var.port
  multi_az                   = var.multi_az
  backup_retention_days      = var.backup_retention_days
  deletion_protection        = var.deletion_protection
  performance_insights       = var.performance_insights
  logs_kms_key_arn           = local.vpc.logs_kms_key_arn
  tags                       = local.tags
}
