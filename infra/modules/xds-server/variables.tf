variable "name" {
  type        = string
  description = "Name of the deployment (kebab-case); prefixes every resource name."
}

variable "cluster_arn" {
  type        = string
  description = "The ECS cluster the control plane runs in."
}

variable "vpc_id" {
  type        = string
  description = "The VPC."
}

variable "vpc_cidr_block" {
  type        = string
  description = "The VPC's address range: Envoys and Prometheus reach the control plane from it."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the tasks and the load balancer."
}

variable "namespace_id" {
  type        = string
  description = "The Cloud Map namespace the control plane registers in (as `xds`)."
}

variable "namespace_name" {
  type        = string
  description = "That namespace's name: xds.<namespace_name> is a name of the control plane's TLS certificate."
}

variable "image" {
  type        = string
  description = "The xds-server image, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/xds-server:TAG."
}

variable "catalog_bucket" {
  type        = string
  description = "The configuration bucket holding the catalog."
}

variable "catalog_key" {
  type        = string
  description = "The catalog's key in the bucket; ending in / a prefix whose fragments are merged (one per service deployment)."
  default     = "xds/catalog.d/"
}

variable "bootstrap_template_key" {
  type        = string
  description = "Where the generic Envoy's bootstrap template is published in the bucket."
  default     = "envoy/bootstrap.yaml.tmpl"
}

variable "config_kms_key_arn" {
  type        = string
  description = "The configuration bucket's KMS key (the task role may decrypt with it)."
}

variable "logs_kms_key_arn" {
  type        = string
  description = "The KMS key of the environment's log groups."
}

variable "ecs_clusters" {
  type        = list(string)
  description = "ARNs of the clusters whose tasks catalogs may name as `ecs` endpoint sources."
  default     = []
}

variable "require_identity" {
  type        = bool
  description = "TLS on the xDS port and `--require-identity`: every Envoy proves its task role (`xds-server identity`) and reads only its own proxy's config; false for plain gRPC, as before identities."
  default     = true
}

variable "replicas" {
  type        = number
  description = "Tasks behind the load balancer; versions are content hashes, so Envoys may reconnect to any."
  default     = 2
}

variable "log_retention_days" {
  type        = number
  description = "Days the control plane's logs are kept."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
