variable "name" {
  type        = string
  description = "The role's name."
  default     = "toolkit-ci"
}

variable "github_repository" {
  type        = string
  description = "OWNER/REPO whose GitHub Actions runs on the CI branches may assume the role; null for none."
  default     = null
  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository is OWNER/REPO, e.g. input-output-hk/atala-mesh."
  }
}

variable "github_oidc_provider_arn" {
  type        = string
  description = "The account's existing OIDC provider for token.actions.githubusercontent.com (an account has one); null makes it."
  default     = null
}

variable "circleci_org_id" {
  type        = string
  description = "The CircleCI organization ID whose project circleci_project_id may assume the role; null for none."
  default     = null
}

variable "circleci_project_id" {
  type        = string
  description = "The CircleCI project ID (Project Settings > Overview) that may assume the role."
  default     = null
  validation {
    condition     = (var.circleci_org_id == null) == (var.circleci_project_id == null)
    error_message = "circleci_org_id and circleci_project_id are given together."
  }
}

variable "circleci_oidc_provider_arn" {
  type        = string
  description = "The account's existing OIDC provider for oidc.circleci.com/org/<circleci_org_id>; null makes it."
  default     = null
}

variable "branch_patterns" {
  type        = list(string)
  description = "The branches whose runs may assume the role (IAM StringLike patterns): the CI's branches, and the default branch (GitHub's scheduled runs run there)."
  default     = ["develop", "infra*", "test*"]
}

variable "repository_arns" {
  type        = list(string)
  description = "The ECR repositories the role may push to (base/ecr's repositories)."
}

variable "state_bucket" {
  type        = string
  description = "The Terraform state bucket the role reads and writes (env.sh's TF_STATE_BUCKET)."
}

variable "state_kms_key_arn" {
  type        = string
  description = "The state bucket's KMS key (SSE-KMS), which reading and writing states needs; null for none."
  default     = null
}

variable "secrets_prefix" {
  type        = string
  description = "The Secrets Manager names env.sh reads (its SECRETS_PREFIX)."
  default     = "infra/"
}

variable "max_session_seconds" {
  type        = number
  description = "How long an assumed session lasts: the longest build-and-apply (GitHub's workflow asks for 2 hours)."
  default     = 7200
}

variable "policy_arns" {
  type        = list(string)
  description = "Managed policies for what applying the service roots needs (ECS, IAM roles of the tasks, logs, Cloud Map, ...)."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
