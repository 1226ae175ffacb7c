variable "name" {
  type        = string
  description = "The database instance's identifier (kebab-case), e.g. the network's name. Names starting with test or infra, or ending in -test, are test databases: no deletion protection or final snapshot unless asked."
}

variable "vpc_id" {
  type        = string
  description = "The VPC of the database's security group."
}

variable "subnet_ids" {
  type        = list(string)
  description = "The private subnets (two availability zones) of the database's subnet group."
}

variable "allowed_security_group_ids" {
  type        = list(string)
  description = "The security groups whose members may connect; nobody else can."
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version (a major, or major.minor); the parameter group's family follows the major."
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

variable "database_name" {
  type        = string
  description = "The database created with the instance."
  default     = "app"
}

variable "master_username" {
  type        = string
  description = "The master user's name (its password is made by RDS and kept in Secrets Manager)."
  default     = "postgres"
}

variable "allocated_storage" {
  type        = number
  description = "Storage in GiB at creation."
  default     = 20
}

variable "max_allocated_storage" {
  type        = number
  description = "Storage autoscaling's limit in GiB."
  default     = 100
}

variable "multi_az" {
  type        = bool
  description = "A standby in the other availability zone (doubles the cost)."
  default     = false
}

variable "backup_retention_days" {
  type        = number
  description = "Days automated backups are kept (1 to 35)."
  default     = 7
  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be 1 to 35: automated backups stay on."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Deletion protection and a final snapshot on drop; null: on unless the name is a test name."
  default     = null
}

variable "performance_insights" {
  type        = bool
  description = "Performance Insights (7 days, encrypted with the module's key); not every instance class has it."
  default     = false
}

variable "logs_kms_key_arn" {
  type        = string
  description = "The KMS key of the environment's log groups (the exported postgresql and upgrade logs)."
}

variable "log_retention_days" {
  type        = number
  description = "Days the exported logs are kept."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
