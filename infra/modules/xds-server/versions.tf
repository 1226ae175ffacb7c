terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    # The control plane's CA (tls_private_key, tls_self_signed_cert).
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}
