# intdemo, the catalog's example service, deployed once per branch into a network: the generic
# Envoy (role intdemo-<deployment>, registered in Cloud Map under that name) in front of two
# small web backends in the same task, a header-selected canary split between them, and the
# deployment's catalog fragment for the network's control plane. Everything about the network
# comes from base/vpc's state.

data "terraform_remote_state" "vpc" {
  backend = "s3"
  config = {
    bucket = var.state_bucket
    key    = "infra/stage/base/vpc/${var.vpc_name}/terraform.tfstate"
    region = var.region
  }
}

locals {
  vpc   = data.terraform_remote_state.vpc.outputs
  tags  = { Environment = var.vpc_name, Deployment = var.env_name, ManagedBy = "terraform" }
  proxy = "intdemo-${var.env_name}"
  backends = {
    web-v1 = 5678
    web-v2 = 5679
  }
}

module "intdemo" {
  source             = "../../../modules/envoy-service"
  name               = var.vpc_name
  service_name       = local.proxy
  cluster_arn        = local.vpc.cluster_arn
  vpc_id             = local.vpc.vpc_id
  vpc_cidr_block     = local.vpc.vpc_cidr_block
  subnet_ids         = local.vpc.private_subnet_ids
  namespace_id       = local.vpc.namespace_id
  envoy_image        = "${local.vpc.image_registry}/envoy:${var.image_tags["envoy"]}"
  loader_image       = "${local.vpc.image_registry}/s3-config-loader:${var.image_tags["s3-config-loader"]}"
  config_bucket      = local.vpc.config_bucket
  bootstrap_key      = local.vpc.bootstrap_template_key
  config_kms_key_arn = local.vpc.config_kms_key_arn
  logs_kms_key_arn   = local.vpc.logs_kms_key_arn
  xds_host           = local.vpc.xds_host
  identity           = local.vpc.xds_require_identity
  xds_ca_certificate = local.vpc.xds_ca_certificate
  catalog_prefix     = local.vpc.catalog_prefix
  catalog_template   = "${path.module}/catalog.yaml.tftpl"
  # Proxies of the network call it over mTLS; people inside the VPC with plain HTTP (the url).
  listener_tls = { mode = "permissive" }
  catalog_vars = {
    proxy       = local.proxy
    port        = var.listener_port
    web_v1_port = local.backends["web-v1"]
    web_v2_port = local.backends["web-v2"]
  }
  listener_ports = [var.listener_port]
  app_containers = [for name, port in local.backends : {
    name    = name
    image   = var.backend_image
    command = ["-listen=:${port}", "-text=${name} of ${local.proxy}"]
  }]
  desired_count = var.desired_count
  tags          = local.tags
}
