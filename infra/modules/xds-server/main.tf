# The control plane: xds-server tasks on Fargate behind an internal network load balancer
# (gRPC on 18000), registered in Cloud Map as xds.<namespace>, reading the catalog from S3: by
# default every fragment under xds/catalog.d/, one per service deployment (envoy-service writes
# its own). It also publishes the generic Envoy's bootstrap template, which names it.
# With require_identity (the default) the xDS port speaks TLS with a certificate from the
# control plane's own CA, kept in Secrets Manager, and every Envoy must present a client
# certificate for its own proxy, which it gets by proving its task role (`xds-server identity`).
# The same CA issues the proxies' mesh identities for service mTLS (`tls.certificate: mesh`), so
# the control plane always runs with it. With acm_pca_arn, AWS Private CA signs instead and no
# CA key exists here. The task role may read the catalog (and the CA), discover Cloud Map
# instances, describe ECS tasks and read the certificates the catalog's listeners use
# (tls_certificate_arns, trusted_ca_arns): nothing else.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# With AWS Private CA, its certificate (and the chain above it) is what Envoys trust.
data "aws_acmpca_certificate_authority" "ca" {
  count = local.own_ca ? 0 : 1
  arn   = var.acm_pca_arn
}

locals {
  catalog_is_prefix = endswith(var.catalog_key, "/")
  # The names Envoys dial, in the control plane's certificate: the load balancer (the
  # bootstrap's XDS_HOST) and the Cloud Map name, which reaches the tasks directly. Each is also
  # an id proxies may sign into their identity requests (`xds-server identity` signs the name
  # it dials).
  tls_names = [aws_lb.this.dns_name, "xds.${var.namespace_name}"]
  own_ca    = var.acm_pca_arn == null
  ca_environment = [{
    name  = "XDS_SERVER_CA"
    value = local.own_ca ? "secretsmanager:${aws_secretsmanager_secret.ca[0].arn}" : "acm-pca:${var.acm_pca_arn}"
  }]
  identity_environment = var.require_identity ? [
    { name = "XDS_SERVER_XDS_TLS", value = "true" },
    { name = "XDS_SERVER_XDS_TLS_NAME", value = join(",", local.tls_names) },
    { name = "XDS_SERVER_REQUIRE_IDENTITY", value = "true" },
  ] : []
  # What Envoys' bootstraps look like depends on that: with identities, mutual TLS with the
  # certificate the generic image's entrypoint keeps in /etc/envoy/identity (its default,
  # beside the bootstrap).
  bootstrap_template = "${path.module}/files/${var.require_identity ? "envoy-bootstrap-identity.yaml.tmpl" : "envoy-bootstrap.yaml.tmpl"}"
}

# The CA, made here unless AWS Private CA signs (acm_pca_arn): an ECDSA P-256 root valid for 10
# years, as `xds-server ca init` makes it. It exists whether or not identities are required, so that turning them off and on again keeps
# every proxy's trust. Its private key lives in two places: the Secrets Manager secret below,
# which only the control plane's task role may read, and this root's Terraform state (so the
# state bucket must be encrypted and readable only by those who apply: infra/README.md). Its
# certificate is public: the ca_certificate_pem output, which Envoys check the control plane
# against. Replacing it is a CA rotation (docs/security.md): every proxy must get the new one.
resource "tls_private_key" "ca" {
  count       = local.own_ca ? 1 : 0
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  count                 = local.own_ca ? 1 : 0
  private_key_pem       = tls_private_key.ca[0].private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 87600
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]
  subject {
    common_name = "xds-server CA ${var.name}"
  }
}

# A key of its own, not the config bucket's: every Envoy task may decrypt with that one (to read
# its bootstrap template), so it would separate nothing.
data "aws_iam_policy_document" "ca_key" {
  #checkov:skip=CKV_AWS_111:a key policy's resource "*" is the key itself, not every resource
  #checkov:skip=CKV_AWS_356:a key policy's resource "*" is the key itself, not every resource
  #checkov:skip=CKV_AWS_109:the account root must administer its own key, or the key is lost
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "ca" {
  count               = local.own_ca ? 1 : 0
  description         = "Encrypts the xds-server CA of ${var.name}"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.ca_key.json
  tags                = var.tags
}

resource "aws_secretsmanager_secret" "ca" {
  #checkov:skip=CKV2_AWS_57:a CA is rotated by serving the next one beside it (--ca-next) until every proxy trusts it, never by a Lambda swapping the key under running proxies
  count       = local.own_ca ? 1 : 0
  name        = "${var.name}/xds-server/ca"
  description = "The xds-server CA of ${var.name}: {\"certificate\": PEM, \"private_key\": PEM}"
  kms_key_id  = aws_kms_key.ca[0].arn
  tags        = var.tags
}

resource "aws_secretsmanager_secret_version" "ca" {
  count     = local.own_ca ? 1 : 0
  secret_id = aws_secretsmanager_secret.ca[0].id
  secret_string = jsonencode({
    certificate = tls_self_signed_cert.ca[0].cert_pem
    private_key = tls_private_key.ca[0].private_key_pem_pkcs8
  })
}

# Only the task role below is granted the secret (and its key); this also refuses it to every
# other role of this network (the modules name theirs <name>-...), whatever IAM grants they may
# be given later. Those who apply Terraform keep their access: it reads the secret back.
data "aws_iam_policy_document" "ca_secret" {
  statement {
    sid       = "OnlyThisControlPlane"
    effect    = "Deny"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:PrincipalArn"
      values   = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/${var.name}-*"]
    }
    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = [module.base.task_role_arn]
    }
  }
}

resource "aws_secretsmanager_secret_policy" "ca" {
  count      = local.own_ca ? 1 : 0
  secret_arn = aws_secretsmanager_secret.ca[0].arn
  policy     = data.aws_iam_policy_document.ca_secret.json
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "ReadCatalog"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.catalog_bucket}/${var.catalog_key}${local.catalog_is_prefix ? "*" : ""}"]
  }
  dynamic "statement" {
    for_each = local.catalog_is_prefix ? [1] : []
    content {
      sid       = "ListCatalogFragments"
      actions   = ["s3:ListBucket"]
      resources = ["arn:aws:s3:::${var.catalog_bucket}"]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${var.catalog_key}*"]
      }
    }
  }
  statement {
    sid       = "DecryptCatalog"
    actions   = ["kms:Decrypt"]
    resources = [var.config_kms_key_arn]
  }
  # The fragments' last good catalog (serve's default --last-good, under the prefix): every
  # replica writes it when what it serves changes, and one that starts while a fragment is bad
  # serves that fragment's last good version from it.
  dynamic "statement" {
    for_each = local.catalog_is_prefix ? [1] : []
    content {
      sid       = "WriteLastGoodCatalog"
      actions   = ["s3:PutObject"]
      resources = ["arn:aws:s3:::${var.catalog_bucket}/${var.catalog_key}.last-good.json"]
    }
  }
  dynamic "statement" {
    for_each = local.catalog_is_prefix ? [1] : []
    content {
      sid       = "EncryptLastGoodCatalog"
      actions   = ["kms:GenerateDataKey"]
      resources = [var.config_kms_key_arn]
    }
  }
  statement {
    sid       = "DiscoverCloudMap"
    actions   = ["servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision"]
    resources = ["*"]
  }
  statement {
    sid       = "DescribeTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }
  dynamic "statement" {
    for_each = local.own_ca ? [1] : []
    content {
      sid       = "ReadCa"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [aws_secretsmanager_secret.ca[0].arn]
    }
  }
  dynamic "statement" {
    for_each = local.own_ca ? [1] : []
    content {
      sid       = "DecryptCa"
      actions   = ["kms:Decrypt"]
      resources = [aws_kms_key.ca[0].arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${data.aws_region.current.region}.amazonaws.com"]
      }
    }
  }
  dynamic "statement" {
    for_each = local.own_ca ? [] : [1]
    content {
      sid = "ReadPrivateCa"
      actions = [
        "acm-pca:DescribeCertificateAuthority",
        "acm-pca:GetCertificateAuthorityCertificate",
        "acm-pca:GetCertificate",
      ]
      resources = [var.acm_pca_arn]
    }
  }
  # End-entity certificates only, through the templates the control plane uses: never a CA
  # certificate that would outlive a compromised task.
  dynamic "statement" {
    for_each = local.own_ca ? [] : [1]
    content {
      sid       = "IssueEndEntityCertificates"
      actions   = ["acm-pca:IssueCertificate"]
      resources = [var.acm_pca_arn]
      condition {
        test     = "StringEquals"
        variable = "acm-pca:TemplateArn"
        values = [for t in ["EndEntityCertificate", "EndEntityClientAuthCertificate", "EndEntityServerAuthCertificate"] :
        "arn:${data.aws_partition.current.partition}:acm-pca:::template/${t}_APIPassthrough/V1"]
      }
    }
  }
  dynamic "statement" {
    for_each = length(var.tls_secret_arns) > 0 ? [1] : []
    content {
      sid       = "ReadTlsSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = var.tls_secret_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.tls_certificate_arns) > 0 ? [1] : []
    content {
      sid       = "ExportListenerCertificates"
      actions   = ["acm:ExportCertificate"]
      resources = var.tls_certificate_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.trusted_ca_arns) > 0 ? [1] : []
    content {
      sid       = "ReadTrustedCaCertificates"
      actions   = ["acm-pca:GetCertificateAuthorityCertificate"]
      resources = var.trusted_ca_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.ecs_clusters) > 0 ? [1] : []
    content {
      sid       = "ListTasks"
      actions   = ["ecs:ListTasks", "ecs:DescribeTasks"]
      resources = ["*"]
      condition {
        test     = "ArnEquals"
        variable = "ecs:cluster"
        values   = var.ecs_clusters
      }
    }
  }
}

module "base" {
  source             = "../ecs-task-base"
  name               = "${var.name}-xds-server"
  log_group_name     = "/ecs/${var.name}/xds-server"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = var.logs_kms_key_arn
  task_policy_json   = data.aws_iam_policy_document.task.json
  tags               = var.tags
}

# The generic Envoy's bootstrap: `xds-server bootstrap` with placeholders that s3-config-loader
# fills in (an init container, or the image's entrypoint with ENVOY_BOOTSTRAP_S3): the proxy
# role, the task ARN and this control plane's address (XDS_HOST); with identities, also
# `--identity-dir /etc/envoy/identity`. tests/tests/infra_files.rs checks both against the
# generator.
resource "aws_s3_object" "envoy_bootstrap" {
  bucket       = var.catalog_bucket
  key          = var.bootstrap_template_key
  source       = local.bootstrap_template
  source_hash  = filemd5(local.bootstrap_template)
  content_type = "application/yaml"
  kms_key_id   = var.config_kms_key_arn
  tags         = var.tags
}

resource "aws_security_group" "this" {
  name        = "${var.name}-xds-server"
  description = "xds-server tasks of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = var.tags

  ingress {
    description = "xDS (gRPC) from the Envoys"
    from_port   = 18000
    to_port     = 18000
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  ingress {
    description = "Admin: metrics for Prometheus, readiness for the load balancer"
    from_port   = 18001
    to_port     = 18001
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  egress {
    description = "AWS APIs (S3, Cloud Map, ECS, Secrets Manager, STS for identities, ACM and AWS Private CA) and the image registry"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-xds-server"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "512"
  memory                   = "1024"
  execution_role_arn       = module.base.execution_role_arn
  task_role_arn            = module.base.task_role_arn
  container_definitions = jsonencode([{
    name                   = "xds-server"
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    environment = concat([
      { name = "XDS_SERVER_CATALOG", value = "s3://${var.catalog_bucket}/${var.catalog_key}" },
      { name = "XDS_SERVER_LOG_FORMAT", value = "json" },
    ], local.ca_environment, local.identity_environment)
    portMappings = [
      { containerPort = 18000, protocol = "tcp" },
      { containerPort = 18001, protocol = "tcp" },
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = module.base.log_group_name
        awslogs-region        = data.aws_region.current.region
        awslogs-stream-prefix = "xds-server"
      }
    }
    # Picked up by ecs-sd (prometheus-ecs-sd's settings).
    dockerLabels = {
      PROMETHEUS_EXPORTER_PORT = "18001"
      PROMETHEUS_EXPORTER_PATH = "/metrics"
    }
    stopTimeout = 10
  }])
  tags = var.tags
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:a TCP load balancer in front of gRPC streams; the tasks log every stream themselves
  name                             = "${var.name}-xds"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = true
  tags                             = var.tags
}

resource "aws_lb_target_group" "this" {
  name        = "${var.name}-xds"
  port        = 18000
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # Streams are long-lived: give them time to move before a task leaves.
  deregistration_delay = 30
  # For ip targets over TCP the load balancer would otherwise show the tasks its own addresses
  # (one per zone) as every connection's source, and the per-address limits (--identity-rate,
  # --max-streams-per-ip) would count all Envoys of a zone as one. The security group already
  # admits the whole VPC.
  preserve_client_ip = "true"

  health_check {
    protocol = "HTTP"
    port     = "18001"
    path     = "/readyz"
  }
  tags = var.tags
}

# Plain TCP: TLS (and the client certificates) pass through to the tasks, which terminate it.
resource "aws_lb_listener" "this" {
  load_balancer_arn = aws_lb.this.arn
  port              = 18000
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
  tags = var.tags
}

resource "aws_service_discovery_service" "this" {
  name = "xds"
  dns_config {
    namespace_id = var.namespace_id
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {}
  tags = var.tags
}

resource "aws_ecs_service" "this" {
  name            = "${var.name}-xds-server"
  cluster         = var.cluster_arn
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = var.replicas
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.this.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = "xds-server"
    container_port   = 18000
  }

  service_registries {
    registry_arn = aws_service_discovery_service.this.arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # A task that starts before the CA is in its secret, or may be read, fails and rolls back.
  depends_on = [aws_lb_listener.this, aws_secretsmanager_secret_version.ca, aws_secretsmanager_secret_policy.ca]
  tags       = var.tags
}
