# The role's trust policy, without provider calls (tests/tests/infra_files.rs renders it with
# `terraform console`): GitHub's token on the CI's branches of one repository, and CircleCI's
# token of one project.

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
            "${local.circle_issuer}:sub" = "org/${var.circleci_org_id}/project/${coalesce(var.circleci_project_id, "none")}/user/*"
          }
        }
      }] : [],
    )
  })
}
