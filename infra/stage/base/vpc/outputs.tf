output "vpc_id" {
  description = "The VPC's id."
  value       = module.vpc.vpc_id
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

output "logs_kms_key_arn" {
  description = "The KMS key for the environment's log groups."
  value       = module.vpc.logs_kms_key_arn
}
