# A PostgreSQL database on RDS in the network's private subnets: storage, backups, Performance
# Insights and the master password's secret encrypted with the module's own KMS key; TLS required
# (rds.force_ssl); reachable only from the security groups given. RDS makes the master password
# and keeps it in Secrets Manager (manage_master_user_password): it is never in the state, a
# tfvars file or a variable. Services read it through their containers' ECS `secrets`.

data "aws_caller_identity" "current" {}

locals {
  # Names of throw-away databases (test*, infra*, *-test): no deletion protection, no final
  # snapshot, unless asked for. Every other name is protected by default.
  test_name           = can(regex("^(test|infra)|-test$", var.name))
  deletion_protection = coalesce(var.deletion_protection, !local.test_name)
  # A final snapshot and the automated backups outlive a dropped database unless its name is a
  # test name, whatever deletion_protection says: turning protection off to drop a database
  # must not also drop its last copy.
  keep_snapshot = !local.test_name
  major         = split(".", var.engine_version)[0]
  log_exports   = ["postgresql", "upgrade"]
}

# RDS would make its export log groups itself, unencrypted and kept forever: they are made first.
resource "aws_cloudwatch_log_group" "this" {
  for_each          = toset(local.log_exports)
  name              = "/aws/rds/instance/${var.name}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_111:a key policy's resource "*" is the key itself, not every resource
  #checkov:skip=CKV_AWS_356:a key policy's resource "*" is the key itself, not every resource
  #checkov:skip=CKV_AWS_109:the account root must administer its own key, or the key is lost
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description         = "Encrypts the database ${var.name}: storage, snapshots, Performance Insights and its master password's secret"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.key.json
  tags                = var.tags
}

resource "aws_db_subnet_group" "this" {
  name       = "${var.name}-database"
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_security_group" "this" {
  name        = "${var.name}-database"
  description = "PostgreSQL ${var.name}: only from the given security groups"
  vpc_id      = var.vpc_id
  tags        = var.tags

  ingress {
    description     = "PostgreSQL from its clients"
    from_port       = var.port
    to_port         = var.port
    protocol        = "tcp"
    security_groups = var.allowed_security_group_ids
  }
  # No egress: the database starts no connection.
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-postgres${local.major}"
  family = "postgres${local.major}"
  tags   = var.tags

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  # Statements slower than a second go to the postgresql log (exported to CloudWatch).
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    # Not "ddl": CREATE/ALTER ROLE ... PASSWORD would put passwords in the exported log.
    name  = "log_statement"
    value = "none"
  }

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

# Enhanced Monitoring's OS metrics (RDS writes them to CloudWatch Logs as this role).
resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-database-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_157:Multi-AZ doubles the cost; it is the multi_az variable, off for test networks
  #checkov:skip=CKV_AWS_353:Performance Insights is the performance_insights variable (smallest classes lack it)
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class
  port           = var.port
  db_name        = var.database_name
  username       = var.master_username

  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this.arn

  allocated_storage     = var.allocated_storage
  max_allocated_storage = var.max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this.arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.this.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.multi_az

  iam_database_authentication_enabled = true
  auto_minor_version_upgrade          = true
  backup_retention_period             = var.backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = local.deletion_protection
  skip_final_snapshot                 = !local.keep_snapshot
  delete_automated_backups            = !local.keep_snapshot
  # Unique per instance (the time it was made, kept): a database made again under the same name
  # gets a snapshot of its own.
  final_snapshot_identifier       = local.keep_snapshot ? "${var.name}-final-${formatdate("YYYYMMDDhhmmss", timestamp())}" : null
  enabled_cloudwatch_logs_exports = local.log_exports

  monitoring_interval = 60
  monitoring_role_arn = aws_iam_role.monitoring.arn

  performance_insights_enabled          = var.performance_insights
  performance_insights_kms_key_id       = var.performance_insights ? aws_kms_key.this.arn : null
  performance_insights_retention_period = var.performance_insights ? 7 : null

  tags       = var.tags
  depends_on = [aws_cloudwatch_log_group.this]

  lifecycle {
    # The snapshot's name is set once, when the instance is made.
    ignore_changes = [final_snapshot_identifier]
  }
}
