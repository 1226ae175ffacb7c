# The base of a stage: the VPC, its Cloud Map namespace and the configuration bucket. Service
# deployments read these outputs through remote state, never hard-coded ids.

locals {
  tags = { Environment = var.env_name, ManagedBy = "terraform" }
}

module "vpc" {
  source             = "../../../modules/vpc"
  name               = var.env_name
  cidr_block         = var.cidr_block
  availability_zones = var.availability_zones
  tags               = local.tags
}

module "service_discovery" {
  source   = "../../../modules/service-discovery"
  vpc_name = var.env_name
  vpc_id   = module.vpc.vpc_id
  tags     = local.tags
}

module "config_bucket" {
  source = "../../../modules/config-bucket"
  name   = var.config_bucket != "" ? var.config_bucket : "${var.env_name}-config"
  tags   = local.tags
}
