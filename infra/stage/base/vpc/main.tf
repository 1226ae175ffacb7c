# The base of a stage, one per network (default prism-test): the VPC, its Cloud Map namespace,
# the configuration bucket, the ECS cluster and the control plane every service's Envoy connects
# to. base/monitoring and the service deployments read these outputs through remote state, never
# hard-coded ids.

data "aws_caller_identity" "current" {}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:only the first two names are taken, and a zone AWS adds sorts after them
  state = "available"
}

locals {
  tags     = { Environment = var.env_name, ManagedBy = "terraform" }
  zones    = length(var.availability_zones) > 0 ? var.availability_zones : slice(data.aws_availability_zones.available.names, 0, 2)
  registry = var.image_registry != "" ? var.image_registry : "${data.aws_caller_identity.current.account_id}.dkr.ecr.${var.region}.amazonaws.com"
}

module "vpc" {
  source             = "../../../modules/vpc"
  name               = var.env_name
  cidr_block         = var.cidr_block
  availability_zones = local.zones
  tags               = local.tags
}

module "service_discovery" {
  source   = "../../../modules/service-discovery"
  vpc_name = var.env_name
  vpc_id   = module.vpc.vpc_id
  tags     = local.tags
}

module "config_bucket" {
  source        = "../../../modules/config-bucket"
  name          = var.config_bucket != "" ? var.config_bucket : "${var.env_name}-config"
  force_destroy = var.config_bucket_force_destroy
  tags          = local.tags
}

module "ssh_keys" {
  source      = "../../../modules/ssh-keys"
  name_prefix = var.env_name
  public_keys = var.ssh_public_keys
  tags        = local.tags
}

module "ecs_cluster" {
  source              = "../../../modules/ecs-cluster"
  name                = var.env_name
  vpc_id              = module.vpc.vpc_id
  vpc_cidr_block      = module.vpc.vpc_cidr_block
  subnet_ids          = module.vpc.private_subnet_ids
  instance_type       = var.instance_type
  min_size            = var.min_instances
  max_size            = var.max_instances
  ssh_authorized_keys = module.ssh_keys.authorized_keys
  logs_kms_key_arn    = module.vpc.logs_kms_key_arn
  tags                = local.tags
}

module "xds_server" {
  source             = "../../../modules/xds-server"
  name               = var.env_name
  cluster_arn        = module.ecs_cluster.cluster_arn
  vpc_id             = module.vpc.vpc_id
  vpc_cidr_block     = module.vpc.vpc_cidr_block
  subnet_ids         = module.vpc.private_subnet_ids
  namespace_id       = module.service_discovery.namespace_id
  namespace_name     = module.service_discovery.namespace_name
  image              = "${local.registry}/xds-server:${var.image_tags["xds-server"]}"
  catalog_bucket     = module.config_bucket.bucket
  config_kms_key_arn = module.config_bucket.kms_key_arn
  logs_kms_key_arn   = module.vpc.logs_kms_key_arn
  ecs_clusters       = [module.ecs_cluster.cluster_arn]
  replicas           = var.xds_replicas
  require_identity   = var.xds_require_identity
  tags               = local.tags
}
