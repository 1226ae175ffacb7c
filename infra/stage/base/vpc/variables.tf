variable "env_name" {
  type        = string
  description = "The deployment's name; the VPC's name (e.g. prism-test)."
}

variable "region" {
  type        = string
  description = "The AWS region."
  default     = "us-east-2"
}

variable "cidr_block" {
  type        = string
  description = "The VPC's address range."
  default     = "10.0.0.0/16"
}

variable "availability_zones" {
  type        = list(string)
  description = "The two availability zones of the subnets."
  default     = ["us-east-2a", "us-east-2b"]
}

variable "config_bucket" {
  type        = string
  description = "Name of the configuration bucket; empty for <env_name>-config."
  default     = ""
}

variable "image_tags" {
  type        = map(string)
  description = "Image tag per component (set by env.sh; unused by the base VPC)."
  default     = {}
}
