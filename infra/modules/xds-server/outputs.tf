output "xds_address" {
  description = "HOST:PORT for Envoys' bootstraps (`xds-server bootstrap --xds`)."
  value       = "${aws_lb.this.dns_name}:18000"
}

output "xds_host" {
  description = "The load balancer's name: XDS_HOST of the bootstrap template (port 18000)."
  value       = aws_lb.this.dns_name
}

output "catalog_key" {
  description = "The catalog's key in the bucket, or the prefix (ending in /) of its fragments."
  value       = var.catalog_key
}

output "bootstrap_template_key" {
  description = "Key of the generic Envoy's bootstrap template in the bucket."
  value       = aws_s3_object.envoy_bootstrap.key
}

output "service_name" {
  description = "The ECS service's name."
  value       = aws_ecs_service.this.name
}

output "task_role_arn" {
  description = "The task role (for bucket or key policies that name their readers)."
  value       = module.base.task_role_arn
}

output "security_group_id" {
  description = "The tasks' security group."
  value       = aws_security_group.this.id
}

output "log_group_name" {
  description = "The tasks' CloudWatch log group."
  value       = module.base.log_group_name
}

output "require_identity" {
  description = "Whether the xDS port speaks TLS and requires each Envoy's identity (envoy-service's `identity`)."
  value       = var.require_identity
}

output "ca_certificate_pem" {
  description = "The control plane's CA certificate (PEM, public): Envoys check the control plane against it (envoy-service's `xds_ca_certificate`)."
  value       = local.own_ca ? tls_self_signed_cert.ca[0].cert_pem : join("\n", compact([data.aws_acmpca_certificate_authority.ca[0].certificate, data.aws_acmpca_certificate_authority.ca[0].certificate_chain]))
}

output "ca_secret_arn" {
  description = "The Secrets Manager secret holding the CA (certificate and private key); only the control plane's task role may read it. Null with acm_pca_arn."
  value       = local.own_ca ? aws_secretsmanager_secret.ca[0].arn : null
}
