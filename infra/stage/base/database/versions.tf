terraform {
  required_version = ">= 1.10" # the S3 backend's use_lockfile (env.sh)
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
  # Bucket, key and region come from env.sh:
  # infra/stage/base/database/<deployment>/terraform.tfstate in the state bucket.
  backend "s3" {}
}

provider "aws" {
  region = var.region
}
