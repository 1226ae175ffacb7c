variable "name" {
  type        = string
  description = "Name of the task family (kebab-case): the task role's name, `<name>-execution` the execution role's."
}

variable "log_group_name" {
  type        = string
  description = "The CloudWatch log group of the task's containers, e.g. /ecs/prism-test/xds-server."
}

variable "log_retention_days" {
  type        = number
  description = "Days the logs are kept."
}

variable "logs_kms_key_arn" {
  type        = string
  description = "The KMS key of the environment's log groups."
}

variable "task_policy_json" {
  type        = string
  description = "The task role's permissions (an IAM policy document): all the task's code may do; empty for none."
}

variable "execution_policy_json" {
  type        = string
  description = "Extra permissions of the execution role, e.g. reading the SSM parameters behind the containers' `secrets`; empty for none."
  default     = ""
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
