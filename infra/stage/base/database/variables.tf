variable "env_name" {
  type        = string
  description = "The network's name: the base/vpc deployment the database lives in (e.g. prism-test); the instance's identifier."
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
  description = "Image tag per component (env.sh passes it to every root; the database runs no image)."
  default     = {}
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version (a major, or major.minor)."
  default     = "17"
}

variable "instance_class" {
  type        = string
  description = "The instance class."
  default     = "db.t4g.micro"
}

variable "port" {
  type        = number
  description = "The port PostgreSQL listens on."
  default     = 5432
}

variable "multi_az" {
  type        = bool
  description = "A standby in the other availability zone."
  default     = false
}

variable "backup_retention_days" {
  type        = number
  description = "Days automated backups are kept."
  default     = 7
}

variable "deletion_protection" {
  type        = bool
  description = "Deletion protection and a final snapshot; null: on unless the name is a test name (test*, infra*, *-test)."
  default     = null
}

variable "performance_insights" {
  type        = bool
  description = "Performance Insights."
  default     = false
}

variable "allowed_security_group_ids" {
  type        = list(string)
  description = "Security groups admitted besides the clients group this root makes."
  default     = []
}
