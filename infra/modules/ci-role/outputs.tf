output "role_arn" {
  description = "The role CI assumes (GitHub's secret AWS_ROLE_ARN, CircleCI's context variable AWS_ROLE_ARN); null when no CI is given."
  value       = try(aws_iam_role.this[0].arn, null)
}

output "trust_policy" {
  description = "The role's trust policy (JSON)."
  value       = local.trust_policy
}
