# Pinned so that a fresh `terraform init` resolves the same provider major version
# this module was written and checked against (aws 5.x schemas: lifecycle filter
# blocks, ephemeral_storage, logging_config).
terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = "gg-py"
      ManagedBy = "terraform"
    }
  }
}
