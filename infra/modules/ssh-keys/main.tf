# The team's SSH keys as EC2 key pairs, and as one authorized_keys text that ecs-cluster installs
# for ec2-user: add yours to the stage's `public_keys` to get access to the instances of an
# environment (through SSM Session Manager: they have no public address).

resource "aws_key_pair" "this" {
  for_each   = var.public_keys
  key_name   = "${var.name_prefix}-${each.key}"
  public_key = each.value
  tags       = var.tags
}
