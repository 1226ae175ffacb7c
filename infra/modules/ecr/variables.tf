variable "repositories" {
  type        = list(string)
  description = "The repositories: the Dockerfile's targets, which env.sh looks images up by."
  default     = ["xds-server", "s3-config-loader", "ecs-sd", "envoy"]
}

variable "counted_branches" {
  type        = list(string)
  description = "Branches with an image budget of their own: the newest keep_per_branch images of each (tags BRANCH-<n>-<sha>) are kept."
  default     = ["develop"]
}

variable "keep_per_branch" {
  type        = number
  description = "Images kept of each of counted_branches."
  default     = 20
}

variable "unpulled_days" {
  type        = number
  description = "Every other image (infra*, test*, any other branch's) expires when no task has pulled it for this many days."
  default     = 30
  validation {
    condition     = var.unpulled_days >= 1
    error_message = "unpulled_days is at least 1."
  }
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
