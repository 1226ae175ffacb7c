variable "repositories" {
  type        = list(string)
  description = "The repositories: the Dockerfile's targets, which env.sh looks images up by."
  default     = ["xds-server", "s3-config-loader", "ecs-sd", "envoy"]
}

variable "branch_prefixes" {
  type        = list(string)
  description = "Tag prefixes (branch names, or their starts: infra matches infra1, infra2) of which the newest keep_per_prefix images are kept each."
  default     = ["develop", "infra", "test"]
}

variable "keep_per_prefix" {
  type        = number
  description = "Images kept of each of branch_prefixes."
  default     = 20
}

variable "keep_other" {
  type        = number
  description = "Images kept of all other tags together."
  default     = 20
}

variable "kms_key_arn" {
  type        = string
  description = "A KMS key for the images; null for ECR's AWS-managed key."
  default     = null
}

variable "force_delete" {
  type        = bool
  description = "Let `terraform destroy` delete repositories that still hold images."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
