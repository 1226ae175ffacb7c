output "endpoint" {
  description = "host:port of the database (TLS required)."
  value       = "${module.database.address}:${module.database.port}"
}

output "address" {
  description = "The database's host name."
  value       = module.database.address
}

output "port" {
  description = "The database's port."
  value       = module.database.port
}

output "database_name" {
  description = "The database created with the instance."
  value       = module.database.database_name
}

output "master_username" {
  description = "The master user's name."
  value       = module.database.master_username
}

output "instance_id" {
  description = "The instance identifier (CloudWatch's DBInstanceIdentifier; the monitoring dashboard's)."
  value       = module.database.instance_id
}

output "secret_arn" {
  description = "The secret with the master credentials (JSON: username, password): a container's ECS secret valueFrom \"<arn>:password::\"."
  value       = module.database.secret_arn
}

output "kms_key_arn" {
  description = "The key the secret is encrypted with: a task's execution role needs kms:Decrypt on it."
  value       = module.database.kms_key_arn
}

output "client_security_group_id" {
  description = "The security group a task joins to reach the database."
  value       = aws_security_group.clients.id
}

output "credentials_command" {
  description = "How to get the credentials (prints the password: run it only where you need it)."
  value       = "aws secretsmanager get-secret-value --region ${var.region} --secret-id '${module.database.secret_arn}' --query SecretString --output text"
}

output "log_groups" {
  description = "The log groups of this deployment, one per line (env.sh -w follows them)."
  value       = join("\n", module.database.log_group_names)
}
