output "bucket" {
  description = "The bucket's name (for s3:// locations)."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "The bucket's ARN (for IAM policies)."
  value       = aws_s3_bucket.this.arn
}

output "kms_key_arn" {
  description = "The key readers need kms:Decrypt on."
  value       = aws_kms_key.this.arn
}
