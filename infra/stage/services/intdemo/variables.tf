variable "env_name" {
  type        = string
  description = "The deployment's name (env.sh: the argument or the branch), e.g. develop."
}

variable "vpc_name" {
  type        = string
  description = "The network to deploy into: a base/vpc deployment's name."
  default     = "prism-test"
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
    condition     = alltrue([for c in ["envoy", "s3-config-loader"] : contains(keys(var.image_tags), c)])
    error_message = "image_tags needs tags for envoy and s3-config-loader (env.sh passes one for every component)."
  }
}

variable "listener_port" {
  type        = number
  description = "The port intdemo's Envoy serves HTTP on."
  default     = 8080
}

variable "backend_image" {
  type        = string
  description = "The small web backend run twice beside Envoy (it answers every request with its -text)."
  default     = "hashicorp/http-echo:1.0"
}

variable "desired_count" {
  type        = number
  description = "Tasks of the deployment."
  default     = 1
}
