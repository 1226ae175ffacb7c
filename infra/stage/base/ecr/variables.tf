variable "env_name" {
  type        = string
  description = "The deployment's name (one per account and region, e.g. images)."
}

variable "region" {
  type        = string
  description = "The AWS region."
  default     = "us-east-2"
}

variable "state_bucket" {
  type        = string
  description = "The Terraform state bucket (env.sh sets it; this root reads no other state)."
  default     = "atala-cvp"
}

variable "image_tags" {
  type        = map(string)
  description = "Image tag per component (env.sh passes it to every root; this root makes the repositories)."
  default     = {}
}

variable "branch_prefixes" {
  type        = list(string)
  description = "Tag prefixes whose newest keep_per_prefix images are kept each (the CI's branches)."
  default     = ["develop", "infra", "test"]
}

variable "keep_per_prefix" {
  type        = number
  description = "Images kept of each prefix."
  default     = 20
}

variable "keep_other" {
  type        = number
  description = "Images kept of all other tags together."
  default     = 20
}
