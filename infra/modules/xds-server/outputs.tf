output "xds_address" {
  description = "HOST:PORT for Envoys' bootstraps (`xds-server bootstrap --xds`)."
  value       = "${aws_lb.this.dns_name}:18000"
}

output "service_name" {
  description = "The ECS service's name."
  value       = aws_ecs_service.this.name
}

output "task_role_arn" {
  description = "The task role (for bucket or key policies that name their readers)."
  value       = module.base.task_role_arn
}

output "security_group_id" {
  description = "The tasks' security group."
  value       = aws_security_group.this.id
}
