# The role's trust policy, without provider calls (tests/tests/infra_files.rs renders it with
# `terraform console`): the token of a run on one of the CI's branches (branch_patterns, which
# must hold the default branch, where GitHub's scheduled runs run), of one GitHub repository or
# one CircleCI project.

locals {
  github        = var.github_repository != null
  circleci      = var.circleci_org_id != null
  github_issuer = "token.actions.githubusercontent.com"
  circle_issuer = "oidc.circleci.com/org/${coalesce(var.circleci_org_id, "none")}"
  trust_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      local.github ? [{
        Effect    = "Allow"
        Action    = "sts:AssumeRoleWithWebIdentity"
        Principal = { Federated = local.github_provider }
        Condition = {
          StringEquals = { "${local.github_issuer}:aud" = "sts.amazonaws.com" }
          StringLike = {
            "${local.github_issuer}:sub" = [for b in var.branch_patterns : "repo:${var.github_repository}:ref:refs/heads/${b}"]
          }
        }
      }] : [],
      local.circleci ? [{
        Effect    = "Allow"
        Action    = "sts:AssumeRoleWithWebIdentity"
        Principal = { Federated = local.circle_provider }
        Condition = {
          StringEquals = { "${local.circle_issuer}:aud" = var.circleci_org_id }
          StringLike = {
            # CIRCLE_OIDC_TOKEN_V2's subject names the branch:
            # org/ORG/project/PROJECT/user/USER/vcs-origin/ORIGIN/vcs-ref/refs/heads/BRANCH.
            "${local.circle_issuer}:sub" = [for b in var.branch_patterns : "org/${var.circleci_org_id}/project/${coalesce(var.circleci_project_id, "none")}/user/*/vcs-origin/*/vcs-ref/refs/heads/${b}"]
          }
        }
      }] : [],
    )
  })
}
