terraform {
  required_version = ">= 1.9" # envoy-service
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
