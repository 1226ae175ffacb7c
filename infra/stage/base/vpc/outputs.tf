output "vpc_id" {
  description = "The VPC's id."
  value       = module.vpc.vpc_id
}

output "vpc_cidr_block" {
  description = "The VPC's address range."
  value       = module.vpc.vpc_cidr_block
}

output "public_subnet_ids" {
  description = "The public subnets."
  value       = module.vpc.public_subnet_ids
}

output "private_subnet_ids" {
  description = "The private subnets."
  value       = module.vpc.private_subnet_ids
}

output "namespace_id" {
  description = "The Cloud Map namespace's id."
  value       = module.service_discovery.namespace_id
}

output "namespace_name" {
  description = "The Cloud Map namespace's name."
  value       = module.service_discovery.namespace_name
}

output "config_bucket" {
  description = "The configuration bucket."
  value       = module.config_bucket.bucket
}

output "config_kms_key_arn" {
  description = "The configuration bucket's KMS key."
  value       = module.config_bucket.kms_key_arn
}

output "logs_kms_key_arn" {
  description = "The KMS key for the environment's log groups."
  value       = module.vpc.logs_kms_key_arn
}

output "cluster_arn" {
  description = "The ECS cluster's ARN."
  value       = module.ecs_cluster.cluster_arn
}

output "cluster_name" {
  description = "The ECS cluster's name."
  value       = module.ecs_cluster.cluster_name
}

output "image_registry" {
  description = "The registry the images come from (ACCOUNT.dkr.ecr.REGION.amazonaws.com)."
  value       = local.registry
}

output "xds_host" {
  description = "The control plane's host name (its internal load balancer; port 18000)."
  value       = module.xds_server.xds_host
}

output "xds_require_identity" {
  description = "Whether the control plane requires identities: services' Envoys then get theirs (envoy-service's identity)."
  value       = module.xds_server.require_identity
}

output "xds_ca_certificate" {
  description = "The control plane's CA certificate (PEM, public), which Envoys check it against."
  value       = module.xds_server.ca_certificate_pem
}

output "catalog_prefix" {
  description = "The key prefix of the catalog fragments the control plane merges."
  value       = module.xds_server.catalog_key
}

output "bootstrap_template_key" {
  description = "Key of the generic Envoy's bootstrap template in the config bucket."
  value       = module.xds_server.bootstrap_template_key
}

output "log_groups" {
  description = "The log groups of this deployment, one per line (env.sh -w follows them)."
  value       = join("\n", [module.xds_server.log_group_name, module.ecs_cluster.log_group_name])
}
