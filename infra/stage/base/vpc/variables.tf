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
  description = "The two availability zones of the subnets; empty for the region's first two."
  default     = []
}

variable "config_bucket" {
  type        = string
  description = "Name of the configuration bucket; empty for <env_name>-config."
  default     = ""
}

variable "config_bucket_force_destroy" {
  type        = bool
  description = "Let dropping this base delete the config bucket with all its object versions (apply with it set, then drop)."
  default     = false
}

variable "image_tags" {
  type        = map(string)
  description = "Image tag per component (env.sh sets it: the newest of the branch, else develop's)."
  validation {
    condition     = contains(keys(var.image_tags), "xds-server")
    error_message = "image_tags needs a tag for xds-server (env.sh passes one for every component)."
  }
}

variable "image_registry" {
  type        = string
  description = "Registry of the images; empty for this account's ECR in var.region."
  default     = ""
}

variable "state_bucket" {
  type        = string
  description = "The Terraform state bucket (set by env.sh; the base reads no other state)."
  default     = "atala-cvp"
}

variable "ssh_public_keys" {
  type        = map(string)
  description = "Team member (kebab-case) to SSH public key, authorised on the container instances; keep it in ~/.secrets.tfvars or the stage's tfvars."
  default     = {}
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the container instances."
  default     = "t3.medium"
}

variable "min_instances" {
  type        = number
  description = "Least container instances."
  default     = 1
}

variable "max_instances" {
  type        = number
  description = "Most container instances."
  default     = 4
}

variable "xds_replicas" {
  type        = number
  description = "Control plane tasks behind its load balancer."
  default     = 2
}

variable "xds_require_identity" {
  type        = bool
  description = "The control plane requires every Envoy's identity over TLS (the services follow through xds_require_identity); false for plain gRPC."
  default     = true
}
