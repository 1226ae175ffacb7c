# The toolkit's image repositories, one per image of infra/docker/Dockerfile, named as env.sh
# and infra/build-images.sh look them up: scanned on push, tags immutable (a tag is one build:
# <branch prefix>-<revision count>-<sha>), encrypted, old images expired (policy.tf).

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
