output "repository_urls" {
  description = "Repository name -> URL (<registry>/<name>)."
  value       = { for name, r in aws_ecr_repository.this : name => r.repository_url }
}

output "registry" {
  description = "The registry's host, base/vpc's image_registry."
  value       = split("/", values(aws_ecr_repository.this)[0].repository_url)[0]
}

output "lifecycle_policy" {
  description = "The lifecycle policy every repository has (JSON)."
  value       = local.lifecycle_policy
}

output "repository_arns" {
  description = "Repository name -> ARN (the CI role's push grant)."
  value       = { for name, r in aws_ecr_repository.this : name => r.arn }
}
