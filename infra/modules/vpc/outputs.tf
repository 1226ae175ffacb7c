output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "The VPC's address range."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "The public subnets, one per availability zone."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "The private subnets, one per availability zone (tasks and instances go here)."
  value       = aws_subnet.private[*].id
}

output "logs_kms_key_arn" {
  description = "The KMS key for the environment's CloudWatch log groups."
  value       = aws_kms_key.logs.arn
}
