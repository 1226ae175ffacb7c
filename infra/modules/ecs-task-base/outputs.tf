output "log_group_name" {
  description = "The log group (for the containers' awslogs options)."
  value       = aws_cloudwatch_log_group.this.name
}

output "execution_role_arn" {
  description = "The execution role (the task definition's execution_role_arn)."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "The task role (the task definition's task_role_arn)."
  value       = aws_iam_role.task.arn
}
