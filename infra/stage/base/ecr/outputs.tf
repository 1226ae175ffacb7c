output "registry" {
  description = "The registry's host (base/vpc's image_registry)."
  value       = module.ecr.registry
}

output "repository_urls" {
  description = "Repository name -> URL."
  value       = module.ecr.repository_urls
}

output "ci_role_arn" {
  description = "The CI role (GitHub's secret AWS_ROLE_ARN, CircleCI's context variable AWS_ROLE_ARN); null when no CI is named."
  value       = module.ci_role.role_arn
}
