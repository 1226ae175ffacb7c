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
