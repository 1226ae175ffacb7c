variable "name" {
  type        = string
  description = "The bucket's name (kebab-case, globally unique)."
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days old versions of objects are kept (a bad config can be rolled back)."
  default     = 90
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete the bucket with every object version in it (apply it first)."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
