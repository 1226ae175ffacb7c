terraform {
  required_version = ">= 1.10" # envoy-service (1.9), the S3 backend's use_lockfile (1.10)
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
  # Bucket, key and region come from env.sh:
  # infra/stage/services/intdemo/<deployment>/terraform.tfstate in the state bucket.
  backend "s3" {}
}

provider "aws" {
  region = var.region
}
