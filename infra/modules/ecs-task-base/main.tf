# What every ECS task of the toolkit needs besides its containers: an encrypted log group, an
# execution role (pull images, write logs) and a task role with exactly the given permissions.

resource "aws_cloudwatch_log_group" "this" {
  name              = var.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "execution" {
  count  = var.execution_policy_json != "" ? 1 : 0
  name   = "secrets"
  role   = aws_iam_role.execution.id
  policy = var.execution_policy_json
}

resource "aws_iam_role" "task" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "task" {
  count  = var.task_policy_json != "" ? 1 : 0
  name   = "task"
  role   = aws_iam_role.task.id
  policy = var.task_policy_json
}
