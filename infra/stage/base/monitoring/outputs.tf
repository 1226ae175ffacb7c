output "grafana_url" {
  description = "Grafana, inside the VPC (dashboards: xds-server, Envoy)."
  value       = "http://${module.monitoring.discovery_name}.${local.vpc.namespace_name}:3000/"
}

output "prometheus_url" {
  description = "Prometheus, inside the VPC."
  value       = "http://${module.monitoring.discovery_name}.${local.vpc.namespace_name}:9090/"
}

output "log_groups" {
  description = "The log groups of this deployment, one per line (env.sh -w follows them)."
  value       = module.monitoring.log_group_name
}
