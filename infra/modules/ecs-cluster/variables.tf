variable "name" {
  type        = string
  description = "Name of the cluster (kebab-case); prefixes every resource name."
}

variable "vpc_id" {
  type        = string
  description = "The VPC of the container instances."
}

variable "vpc_cidr_block" {
  type        = string
  description = "The VPC's address range: Prometheus scrapes the instances' node exporter from it."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the container instances (one per availability zone)."
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the container instances."
  default     = "t3.medium"
}

variable "min_size" {
  type        = number
  description = "Least container instances."
  default     = 1
}

variable "max_size" {
  type        = number
  description = "Most container instances."
  default     = 4
}

variable "key_name" {
  type        = string
  description = "EC2 key pair for SSH to the instances (ec2-user); empty for none."
  default     = ""
}

variable "ssh_authorized_keys" {
  type        = string
  description = "SSH public keys (one per line, ssh-keys module's authorized_keys) authorised for ec2-user."
  default     = ""
}

variable "node_exporter_image" {
  type        = string
  description = "The Prometheus node exporter image, run on every container instance."
  default     = "prom/node-exporter:v1.9.1"
}

variable "logs_kms_key_arn" {
  type        = string
  description = "The KMS key of the environment's log groups."
}

variable "log_retention_days" {
  type        = number
  description = "Days the node exporter's logs are kept."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
