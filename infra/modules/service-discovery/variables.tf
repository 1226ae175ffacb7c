variable "vpc_name" {
  type        = string
  description = "Name of the VPC; the namespace defaults to <vpc_name>.atala.local."
}

variable "vpc_id" {
  type        = string
  description = "The VPC the private DNS namespace answers in."
}

variable "namespace" {
  type        = string
  description = "The namespace's DNS name; empty for <vpc_name>.atala.local."
  default     = ""
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
