# The toolkit's image repositories, one per image of infra/docker/Dockerfile, named as env.sh
# and infra/build-images.sh look them up: scanned on push, tags immutable (a tag is one build:
# <branch prefix>-<revision count>-<sha>), encrypted, old images expired per branch prefix.

locals {
  # Rules by priority: the newest keep_per_prefix images of each prefix, then the newest
  # keep_other of every other tag; untagged images (layers of replaced manifests) go after a day.
  prefix_rules = [for i, p in var.branch_prefixes : {
    rulePriority = i + 1
    description  = "Keep the newest ${var.keep_per_prefix} images of ${p}*"
    selection = {
      tagStatus     = "tagged"
      tagPrefixList = [p]
      countType     = "imageCountMoreThan"
      countNumber   = var.keep_per_prefix
    }
    action = { type = "expire" }
  }]
  lifecycle_policy = jsonencode({
    rules = concat(
      [{
        rulePriority = 1
        description  = "Untagged images go after a day"
        selection    = { tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 1 }
        action       = { type = "expire" }
      }],
      [for r in local.prefix_rules : merge(r, { rulePriority = r.rulePriority + 1 })],
      [{
        rulePriority = length(var.branch_prefixes) + 2
        description  = "Keep the newest ${var.keep_other} images of other branches"
        selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = var.keep_other }
        action       = { type = "expire" }
      }],
    )
  })
}

resource "aws_ecr_repository" "this" {
  for_each             = toset(var.repositories)
  name                 = each.value
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_delete
  tags                 = var.tags

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = aws_ecr_repository.this
  repository = each.value.name
  policy     = local.lifecycle_policy
}
