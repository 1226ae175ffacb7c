variable "name" {
  type        = string
  description = "Name of the VPC (kebab-case), e.g. prism-test; prefixes every resource name."
}

variable "cidr_block" {
  type        = string
  description = "The VPC's address range; each of the four subnets gets a /20 of it."
  default     = "10.0.0.0/16"
}

variable "availability_zones" {
  type        = list(string)
  description = "Exactly two availability zones, one public and one private subnet in each."

  validation {
    condition     = length(var.availability_zones) == 2
    error_message = "Give exactly two availability zones."
  }
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days the VPC flow logs are kept in CloudWatch Logs (a year, for investigations)."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
