terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # State: keep it remote and locked for any shared environment, e.g. add
  #   backend "s3" {}
  # and pass bucket/key/region (and use_lockfile = true) with `terraform init -backend-config=...`.
  # See docs/deployment.md.
}
