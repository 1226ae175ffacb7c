# The image repositories, once per account and region (not per network): `env.sh -a images`.
# Apply it before the first build-images.sh; every network's base/vpc pulls from it
# (image_registry, default this account's registry).

locals {
  tags = { Deployment = var.env_name, ManagedBy = "terraform" }
}

module "ecr" {
  source           = "../../../modules/ecr"
  counted_branches = var.counted_branches
  keep_per_branch  = var.keep_per_branch
  unpulled_days    = var.unpulled_days
  tags             = local.tags
}

# The role infra/ci's pipelines assume, when a CI is named (ci_github_repository or
# ci_circleci_org_id): OIDC only, on the CI's branches only.
module "ci_role" {
  source                     = "../../../modules/ci-role"
  github_repository          = var.ci_github_repository
  github_oidc_provider_arn   = var.ci_github_oidc_provider_arn
  circleci_org_id            = var.ci_circleci_org_id
  circleci_project_id        = var.ci_circleci_project_id
  circleci_oidc_provider_arn = var.ci_circleci_oidc_provider_arn
  repository_arns            = values(module.ecr.repository_arns)
  state_bucket               = var.state_bucket
  state_kms_key_arn          = var.ci_state_kms_key_arn
  policy_arns                = var.ci_policy_arns
  tags                       = local.tags
}
