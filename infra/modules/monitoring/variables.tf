variable "name" {
  type        = string
  description = "Name of the deployment (kebab-case); prefixes every resource name."
}

variable "cluster_arn" {
  type        = string
  description = "The ECS cluster monitoring runs in."
}

variable "vpc_id" {
  type        = string
  description = "The VPC: its EC2 hosts tagged Prometheus=true are scraped."
}

variable "vpc_cidr_block" {
  type        = string
  description = "The VPC's address range: Grafana and Prometheus are reachable from it."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the task."
}

variable "namespace_id" {
  type        = string
  description = "The Cloud Map namespace monitoring registers in (as `monitoring`)."
}

variable "config_bucket" {
  type        = string
  description = "The configuration bucket; the configuration goes under `monitoring/`."
}

variable "config_kms_key_arn" {
  type        = string
  description = "The configuration bucket's KMS key."
}

variable "logs_kms_key_arn" {
  type        = string
  description = "The KMS key of the environment's log groups."
}

variable "loader_image" {
  type        = string
  description = "The s3-config-loader image."
}

variable "ecs_sd_image" {
  type        = string
  description = "The ecs-sd image."
}

variable "prometheus_image" {
  type        = string
  description = "The Prometheus image."
  default     = "prom/prometheus:v2.53.4"
}

variable "grafana_image" {
  type        = string
  description = "The Grafana image."
  default     = "grafana/grafana:11.6.0"
}

variable "grafana_admin_password" {
  type        = string
  description = "Grafana's admin password (kept as an encrypted SSM parameter; give it from ~/.secrets.tfvars)."
  sensitive   = true
}

variable "log_retention_days" {
  type        = number
  description = "Days the monitoring's own logs are kept."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
