# The whole stack with example.tfvars, applied against a mocked AWS provider: no account,
# no network. From terraform/ (after `terraform init -backend=false`):
#   terraform test -filter=tests/stack.tftest.hcl -var-file=example.tfvars
# Mocked resources get fake IDs; the defaults below only give ARNs the shape that the
# provider validates.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }

  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }

  mock_data "aws_ssm_parameter" {
    defaults = { value = "ami-0123456789abcdef0" }
  }

  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }

  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/mock" }
  }

  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/mock/0123456789abcdef"
      arn_suffix = "app/mock/0123456789abcdef"
      dns_name   = "mock-0123456789.eu-west-1.elb.amazonaws.com"
    }
  }

  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/mock/0123456789abcdef"
      arn_suffix = "targetgroup/mock/0123456789abcdef"
    }
  }

  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:eu-west-1:123456789012:mock-alarms" }
  }

  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/mock" }
  }

  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn                  = "arn:aws:ecs:eu-west-1:123456789012:task-definition/mock:1"
      arn_without_revision = "arn:aws:ecs:eu-west-1:123456789012:task-definition/mock"
    }
  }

  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0" }
  }

  mock_resource "aws_autoscaling_group" {
    defaults = { arn = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:00000000-0000-0000-0000-000000000000:autoScalingGroupName/mock" }
  }

  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::manyheads-prod-models-123456789012" }
  }

  mock_resource "aws_db_instance" {
    defaults = {
      address = "manyheads-prod.abcdefghijkl.eu-west-1.rds.amazonaws.com"
      port    = 5432
      master_user_secret = [{
        secret_arn    = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-mock-AbCdEf"
        kms_key_id    = ""
        secret_status = "active"
      }]
    }
  }
}

run "example_tfvars" {
  assert {
    condition     = startswith(output.api_url, "https://")
    error_message = "example.tfvars sets a certificate: the API must be served over HTTPS."
  }

  assert {
    condition     = endswith(output.embedder_address, ".elb.amazonaws.com:50051")
    error_message = "EMBEDDER_ADDRESS must be the internal load balancer's DNS name and the gRPC port."
  }

  assert {
    condition     = toset(keys(output.ecr_repository_urls)) == toset(["embedder-cpu", "embedder-gpu", "router", "training"])
    error_message = "One ECR repository per image role."
  }

  assert {
    condition     = output.db_master_user_secret_arn == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-mock-AbCdEf"
    error_message = "The secret output must be the ARN of the RDS-managed secret."
  }

  assert {
    condition     = output.model_store_bucket == "manyheads-prod-models-123456789012"
    error_message = "Default bucket name: <project>-<environment>-models-<account id>."
  }

  assert {
    condition     = !can(regex("(?i)password", jsonencode(module.database)))
    error_message = "No database output may carry a password."
  }

  assert {
    condition = (
      module.router.database_secret_arn == output.db_service_secret_arns["router"] &&
      module.training.database_secret_arn == output.db_service_secret_arns["training"] &&
      output.db_service_secret_arns["router"] != output.db_service_secret_arns["training"] &&
      !contains(values(output.db_service_secret_arns), output.db_master_user_secret_arn)
    )
    error_message = "Routers and training log in with their own roles' secrets, never the master user's."
  }

  assert {
    condition     = output.migrations_task_definition == "manyheads-prod-migrations" && strcontains(output.migrations_network_configuration, module.network.security_group_ids.migrations)
    error_message = "The migrations task (the only user of the owner's secret) runs in its own security group."
  }

  assert {
    condition     = module.router.spool.path == "/srv/spool" && module.router.spool.file_system_id != null
    error_message = "The routers' spool is on EFS."
  }

  assert {
    condition     = module.router.metrics_namespace == "manyheads-prod/router" && contains(module.monitoring.alarm_names, "manyheads-prod-inference-rows-lost")
    error_message = "The monitoring module alarms on the routers' own metrics namespace."
  }
}

run "gpu_embedder" {
  variables {
    embedder_use_gpu    = true
    embedder_cpu        = 3072
    embedder_memory     = 12288
    embedder_lanes      = 1
    embedder_tf_threads = 4
  }

  assert {
    condition     = module.cluster.gpu_capacity_provider_name == "manyheads-prod-gpu"
    error_message = "embedder_use_gpu must create the GPU capacity provider."
  }
}

run "http_only_when_allowed" {
  variables {
    certificate_arn  = null
    allow_plain_http = true
  }

  assert {
    condition     = startswith(output.api_url, "http://")
    error_message = "Without a certificate, and only with allow_plain_http (modules.tftest.hcl: router_needs_https), the API is plain HTTP."
  }
}
