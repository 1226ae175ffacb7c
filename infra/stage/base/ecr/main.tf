# The image repositories, once per account and region (not per network): `env.sh -a images`.
# Apply it before the first build-images.sh; every network's base/vpc pulls from it
# (image_registry, default this account's registry).

locals {
  tags = { Deployment = var.env_name, ManagedBy = "terraform" }
}

module "ecr" {
  source          = "../../../modules/ecr"
  branch_prefixes = var.branch_prefixes
  keep_per_prefix = var.keep_per_prefix
  keep_other      = var.keep_other
  tags            = local.tags
}
