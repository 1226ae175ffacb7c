output "namespace_id" {
  description = "The namespace's id (for aws_service_discovery_service)."
  value       = aws_service_discovery_private_dns_namespace.this.id
}

output "namespace_name" {
  description = "The namespace's DNS name (for catalogs' cloud_map sources)."
  value       = aws_service_discovery_private_dns_namespace.this.name
}

output "namespace_arn" {
  description = "The namespace's ARN (for IAM policies)."
  value       = aws_service_discovery_private_dns_namespace.this.arn
}
