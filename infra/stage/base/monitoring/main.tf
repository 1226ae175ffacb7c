# Monitoring of one network: Prometheus, ecs-sd and Grafana as one Fargate task in the base's
# cluster, their configuration delivered from the base's config bucket. Deploy it with the
# network's name (the base/vpc deployment it watches): `env.sh -a prism-test`.

data "terraform_remote_state" "vpc" {
  backend = "s3"
  config = {
    bucket = var.state_bucket
    key    = "infra/stage/base/vpc/${var.env_name}/terraform.tfstate"
    region = var.region
  }
}

locals {
  vpc      = data.terraform_remote_state.vpc.outputs
  tags     = { Environment = var.env_name, ManagedBy = "terraform" }
  registry = local.vpc.image_registry
}

module "monitoring" {
  source                 = "../../../modules/monitoring"
  name                   = var.env_name
  cluster_arn            = local.vpc.cluster_arn
  vpc_id                 = local.vpc.vpc_id
  vpc_cidr_block         = local.vpc.vpc_cidr_block
  subnet_ids             = local.vpc.private_subnet_ids
  namespace_id           = local.vpc.namespace_id
  config_bucket          = local.vpc.config_bucket
  config_kms_key_arn     = local.vpc.config_kms_key_arn
  logs_kms_key_arn       = local.vpc.logs_kms_key_arn
  loader_image           = "${local.registry}/s3-config-loader:${var.image_tags["s3-config-loader"]}"
  ecs_sd_image           = "${local.registry}/ecs-sd:${var.image_tags["ecs-sd"]}"
  grafana_admin_password = var.grafana_admin_password
  tags                   = local.tags
}
