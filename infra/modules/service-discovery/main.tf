# The Cloud Map private DNS namespace of a VPC: services register their tasks in it, and
# xds-server reads their instances from it (`endpoints.cloud_map` in the catalog).

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = var.namespace != "" ? var.namespace : "${var.vpc_name}.atala.local"
  description = "Service discovery of VPC ${var.vpc_name}"
  vpc         = var.vpc_id
  tags        = var.tags
}
