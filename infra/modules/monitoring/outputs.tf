output "discovery_name" {
  description = "The Cloud Map name: Grafana is http://monitoring.<namespace>:3000, Prometheus :9090."
  value       = aws_service_discovery_service.this.name
}

output "service_name" {
  description = "The ECS service's name."
  value       = aws_ecs_service.this.name
}

output "task_role_arn" {
  description = "The task role (for bucket or key policies that name their readers)."
  value       = module.base.task_role_arn
}

output "log_group_name" {
  description = "The tasks' CloudWatch log group."
  value       = module.base.log_group_name
}
