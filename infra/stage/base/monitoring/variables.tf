variable "env_name" {
  type        = string
  description = "The network's name: the base/vpc deployment to monitor (e.g. prism-test)."
}

variable "region" {
  type        = string
  description = "The AWS region (of the state bucket too)."
  default     = "us-east-2"
}

variable "state_bucket" {
  type        = string
  description = "The Terraform state bucket holding base/vpc's state (env.sh sets it)."
  default     = "atala-cvp"
}

variable "image_tags" {
  type        = map(string)
  description = "Image tag per component (env.sh sets it: the newest of the branch, else develop's)."
  validation {
    condition     = alltrue([for c in ["s3-config-loader", "ecs-sd"] : contains(keys(var.image_tags), c)])
    error_message = "image_tags needs tags for s3-config-loader and ecs-sd (env.sh passes one for every component)."
  }
}

variable "grafana_admin_password" {
  type        = string
  description = "Grafana's admin password; put it in ~/.secrets.tfvars."
  sensitive   = true
}
