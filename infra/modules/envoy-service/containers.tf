# The application's containers and what their ECS `secrets` need, apart from main.tf and from
# any provider so tests render them with Terraform itself (tests/tests/infra_files.rs).

locals {
  app_container_definitions = [for c in var.app_containers : {
    name                   = c.name
    image                  = c.image
    command                = c.command
    essential              = true
    readonlyRootFilesystem = true
    environment            = [for k, v in c.environment : { name = k, value = v }]
    # Resolved by ECS when the task starts: the value is never in the task definition or state.
    secrets = [for k, v in c.secrets : { name = k, valueFrom = v }]
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = c.name })
    }
  }]
  app_secret_values = flatten([for c in var.app_containers : values(c.secrets)])
  # A Secrets Manager valueFrom may pick a JSON key (<secret arn>:password::); IAM names the
  # secret itself: its first 7 fields. An SSM parameter is named by its whole ARN.
  app_secret_arns = distinct([
    for v in local.app_secret_values : join(":", slice(split(":", v), 0, 7))
    if split(":", v)[2] == "secretsmanager"
  ])
  app_parameter_arns = distinct([for v in local.app_secret_values : v if split(":", v)[2] == "ssm"])
  # The execution role reads exactly those secrets and parameters (and decrypts with their keys);
  # empty for none.
  app_secrets_policy_json = length(local.app_secret_values) == 0 ? "" : jsonencode({
    Version = "2012-10-17"
    Statement = concat(length(local.app_secret_arns) == 0 ? [] : [{
      Sid      = "ReadContainerSecrets"
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = local.app_secret_arns
      }], length(local.app_parameter_arns) == 0 ? [] : [{
      Sid      = "ReadContainerParameters"
      Effect   = "Allow"
      Action   = ["ssm:GetParameters"]
      Resource = local.app_parameter_arns
      }], length(var.secrets_kms_key_arns) == 0 ? [] : [{
      Sid      = "DecryptContainerSecrets"
      Effect   = "Allow"
      Action   = ["kms:Decrypt"]
      Resource = var.secrets_kms_key_arns
    }])
  })
}
