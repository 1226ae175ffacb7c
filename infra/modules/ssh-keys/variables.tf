variable "name_prefix" {
  type        = string
  description = "Prefix of the key pairs' names (kebab-case), e.g. prism-test."
}

variable "public_keys" {
  type        = map(string)
  description = "Team member (kebab-case) to SSH public key; each becomes a key pair."
  default     = {}
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
