# The role CI assumes to build images and apply branch environments (infra/ci/), trusted only
# through OIDC and only for the CI's branches (trust.tf): GitHub's and CircleCI's tokens name the
# branch in their `sub`, so a run on any other branch, a pull request or a fork cannot assume
# the role. It may write only the service roots' states: the base roots are applied by hand.

# The providers the trust policy (trust.tf) names: the given ones, else those made here.
locals {
  github_provider = local.github ? coalesce(
    var.github_oidc_provider_arn, try(aws_iam_openid_connect_provider.github[0].arn, null)
  ) : null
  circle_provider = local.circleci ? coalesce(
    var.circleci_oidc_provider_arn, try(aws_iam_openid_connect_provider.circleci[0].arn, null)
  ) : null
}

resource "aws_iam_openid_connect_provider" "github" {
  count          = local.github && var.github_oidc_provider_arn == null ? 1 : 0
  url            = "https://${local.github_issuer}"
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

resource "aws_iam_openid_connect_provider" "circleci" {
  count          = local.circleci && var.circleci_oidc_provider_arn == null ? 1 : 0
  url            = "https://${local.circle_issuer}"
  client_id_list = [var.circleci_org_id]
  tags           = var.tags
}

resource "aws_iam_role" "this" {
  count                = local.github || local.circleci ? 1 : 0
  name                 = var.name
  assume_role_policy   = local.trust_policy
  max_session_duration = var.max_session_seconds
  tags                 = var.tags
}

data "aws_iam_policy_document" "ci" {
  statement {
    sid = "PushImages"
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
      "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload",
      "ecr:PutImage", "ecr:UploadLayerPart",
    ]
    resources = var.repository_arns
  }
  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource of its own
  }
  statement {
    sid       = "StateBucket"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.state_bucket}"]
  }
  statement {
    sid = "ReadStates"
    # The service roots read the base roots' states (terraform_remote_state).
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.state_bucket}/infra/*"]
  }
  statement {
    sid = "WriteServiceStates"
    # The service roots' states, their .tflock (use_lockfile) and CI's made-by-ci marks.
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:aws:s3:::${var.state_bucket}/infra/stage/services/*"]
  }
  dynamic "statement" {
    for_each = var.state_kms_key_arn == null ? [] : [var.state_kms_key_arn]
    content {
      sid       = "StateKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
  statement {
    sid       = "ListSecrets"
    actions   = ["secretsmanager:ListSecrets"]
    resources = ["*"] # ListSecrets has no resource of its own
  }
  statement {
    sid = "ReadSecrets"
    # env.sh hands the roots' secrets from Secrets Manager (SECRETS_PREFIX, default infra/).
    actions   = ["secretsmanager:GetSecretValue"]
    resources = ["arn:aws:secretsmanager:*:*:secret:${var.secrets_prefix}*"]
  }
}

resource "aws_iam_role_policy" "ci" {
  count  = length(aws_iam_role.this)
  name   = "images-and-state"
  role   = aws_iam_role.this[0].id
  policy = data.aws_iam_policy_document.ci.json
}

resource "aws_iam_role_policy_attachment" "extra" {
  for_each   = length(aws_iam_role.this) > 0 ? toset(var.policy_arns) : toset([])
  role       = aws_iam_role.this[0].name
  policy_arn = each.value
}
