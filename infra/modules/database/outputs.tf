output "address" {
  description = "The database's host name."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "The database's port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "The database created with the instance."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "The master user's name."
  value       = aws_db_instance.this.username
}

output "instance_id" {
  description = "The instance identifier (CloudWatch's DBInstanceIdentifier)."
  value       = aws_db_instance.this.identifier
}

output "secret_arn" {
  description = "The Secrets Manager secret RDS keeps the master credentials in (JSON: username, password)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "The key of the storage and of the secret: readers of the secret need kms:Decrypt on it."
  value       = aws_kms_key.this.arn
}

output "security_group_id" {
  description = "The database's security group."
  value       = aws_security_group.this.id
}

output "log_group_names" {
  description = "The log groups RDS exports the postgresql and upgrade logs to."
  value       = [for g in aws_cloudwatch_log_group.this : g.name]
}
