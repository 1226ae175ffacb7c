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

variable "counted_branches" {
  type        = list(string)
  description = "Branches whose newest keep_per_branch images are kept each; every other image goes unpulled_days after its last pull."
  default     = ["develop"]
}

variable "keep_per_branch" {
  type        = number
  description = "Images kept of each of counted_branches."
  default     = 20
}

variable "unpulled_days" {
  type        = number
  description = "Days after its last pull that an image of any other branch expires."
  default     = 30
}

variable "ci_github_repository" {
  type        = string
  description = "OWNER/REPO whose GitHub Actions (infra/ci/github-actions.yml) may assume the CI role; null for none."
  default     = null
}

variable "ci_github_oidc_provider_arn" {
  type        = string
  description = "The account's existing GitHub OIDC provider; null makes it."
  default     = null
}

variable "ci_circleci_org_id" {
  type        = string
  description = "The CircleCI organization ID whose project ci_circleci_project_id may assume the CI role; null for none."
  default     = null
}

variable "ci_circleci_project_id" {
  type        = string
  description = "The CircleCI project ID."
  default     = null
}

variable "ci_circleci_oidc_provider_arn" {
  type        = string
  description = "The account's existing CircleCI OIDC provider; null makes it."
  default     = null
}

variable "ci_state_kms_key_arn" {
  type        = string
  description = "The state bucket's KMS key, for the CI role; null when it has none."
  default     = null
}

variable "ci_policy_arns" {
  type        = list(string)
  description = "Managed policies the CI role gets for applying the service roots."
  default     = []
}
