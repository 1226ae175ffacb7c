output "key_names" {
  description = "Team member to key pair name."
  value       = { for k, v in aws_key_pair.this : k => v.key_name }
}

output "authorized_keys" {
  description = "Every public key, one per line (an authorized_keys file)."
  value       = join("\n", values(var.public_keys))
}
