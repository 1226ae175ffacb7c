output "cluster_name" {
  description = "The cluster's name."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "The cluster's ARN."
  value       = aws_ecs_cluster.this.arn
}

output "ec2_capacity_provider" {
  description = "The EC2 capacity provider's name (for services that run on the instances)."
  value       = aws_ecs_capacity_provider.ec2.name
}

output "instance_security_group_id" {
  description = "The container instances' security group."
  value       = aws_security_group.instance.id
}

output "log_group_name" {
  description = "The node exporter's CloudWatch log group."
  value       = module.node_exporter.log_group_name
}
