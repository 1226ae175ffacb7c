output "key_names" {
  description = "Team member to key pair name."
  value       = { for k, v in aws_key_pair.this : k => v.key_name }
}
