output "url" {
  description = "intdemo through its Envoy, inside the VPC (add `x-canary: 1` for the 90/10 split)."
  value       = "http://${local.proxy}.${local.vpc.namespace_name}:${var.listener_port}/"
}

output "proxy" {
  description = "The proxy role: the catalog's proxies key and Envoy's node.cluster."
  value       = local.proxy
}

output "catalog_object" {
  description = "The deployment's catalog fragment."
  value       = "s3://${local.vpc.config_bucket}/${module.intdemo.catalog_key}"
}

output "log_groups" {
  description = "The log groups of this deployment, one per line (env.sh -w follows them)."
  value       = module.intdemo.log_group_name
}
