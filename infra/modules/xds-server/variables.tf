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

variable "acm_pca_arn" {
  type        = string
  description = "An AWS Private CA (ARN) that signs every certificate of the control plane (`--ca acm-pca:ARN`): the xDS port's, the proxies' client and mesh certificates. Null: the module makes its own CA and keeps it in Secrets Manager."
  default     = null
  validation {
    condition     = var.acm_pca_arn == null || can(regex("^arn:[a-z-]+:acm-pca:[a-z0-9-]+:[0-9]{12}:certificate-authority/.+$", var.acm_pca_arn))
    error_message = "acm_pca_arn is an AWS Private CA ARN (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID)."
  }
}

variable "tls_certificate_arns" {
  type        = list(string)
  description = "ACM certificates the catalog's listeners present (`tls.certificate: { acm: { arn } }`): the control plane may export exactly these."
  default     = []
}

variable "tls_secret_arns" {
  type        = list(string)
  description = "Secrets Manager secrets the catalog names as certificates or trust bundles (`{ secrets_manager: { secret } }`): the control plane may read exactly these (a secret under a customer-managed KMS key also needs kms:Decrypt in that key's policy)."
  default     = []
}

variable "trusted_ca_arns" {
  type        = list(string)
  description = "AWS Private CAs whose certificates the catalog trusts (`trust: { acm_pca: [...] }`): the control plane may read exactly these CA certificates."
  default     = []
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
