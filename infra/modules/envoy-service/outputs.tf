output "service_name" {
  description = "The ECS service's name."
  value       = aws_ecs_service.this.name
}

output "discovery_name" {
  description = "The Cloud Map service name (for other services' catalogs)."
  value       = aws_service_discovery_service.this.name
}

output "security_group_id" {
  description = "The tasks' security group."
  value       = aws_security_group.this.id
}

output "catalog_key" {
  description = "Key of the service's catalog fragment in the config bucket."
  value       = aws_s3_object.catalog.key
}

output "log_group_name" {
  description = "The tasks' CloudWatch log group."
  value       = module.base.log_group_name
}

output "catalog_fragment" {
  description = "The service's rendered catalog fragment, for other services' catalog_fragments_in_apply when they change in the same apply."
  value       = local.catalog_fragment
}
