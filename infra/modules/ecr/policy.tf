# The lifecycle policy every repository has, without provider calls (tests/tests/infra_files.rs
# renders it with `terraform console`).

locals {
  # Rules by priority: untagged images (layers of replaced manifests) go after a day; each of
  # counted_branches keeps its newest keep_per_branch images; every other image expires when
  # no task has pulled it for unpulled_days. A count is one budget for every tag a rule
  # selects, so a count over infra* would let one busy infra branch expire another's running
  # image; the pull time is each image's own, and a running environment pulls its image at
  # every task start.
  branch_rules = [for i, b in var.counted_branches : {
    rulePriority = i + 2
    description  = "Keep the newest ${var.keep_per_branch} images of ${b}"
    selection = {
      tagStatus      = "tagged"
      tagPatternList = ["${b}-*"]
      countType      = "imageCountMoreThan"
      countNumber    = var.keep_per_branch
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
      local.branch_rules,
      [{
        rulePriority = length(var.counted_branches) + 2
        description  = "Other images go ${var.unpulled_days} days after their last pull"
        selection    = { tagStatus = "any", countType = "sinceImagePulled", countUnit = "days", countNumber = var.unpulled_days }
        action       = { type = "expire" }
      }],
    )
  })
}
