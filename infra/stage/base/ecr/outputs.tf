output "registry" {
  description = "The registry's host (base/vpc's image_registry)."
  value       = module.ecr.registry
}

output "repository_urls" {
  description = "Repository name -> URL."
  value       = module.ecr.repository_urls
}
