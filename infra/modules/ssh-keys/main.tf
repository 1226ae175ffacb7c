# The team's SSH keys as EC2 key pairs: add yours to the stage's `public_keys` to get access to
# the instances of an environment (user ec2-user on the ECS hosts).

resource "aws_key_pair" "this" {
  for_each   = var.public_keys
  key_name   = "${var.name_prefix}-${each.key}"
  public_key = each.value
  tags       = var.tags
}
