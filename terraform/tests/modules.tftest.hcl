# Each module applied on its own against a mocked AWS provider, with assertions on what the
# deployment relies on (ports, health checks, secrets, IAM scope, sync commands).
# From terraform/ (after `terraform init -backend=false`):
#   terraform test -filter=tests/modules.tftest.hcl

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


variables {
  secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-mock-AbCdEf"
}

# --- network ------------------------------------------------------------------------------

run "network" {
  module {
    source = "./modules/network"
  }

  variables {
    name               = "mh-test"
    availability_zones = ["eu-west-1a", "eu-west-1b"]
    single_nat_gateway = true
  }

  assert {
    condition     = length(aws_subnet.private) == 2 && length(aws_subnet.public) == 2 && length(aws_nat_gateway.this) == 1
    error_message = "One public and one private subnet per zone, one NAT gateway by default."
  }

  assert {
    condition = length(distinct(concat(
      [for subnet in aws_subnet.public : subnet.cidr_block],
      [for subnet in aws_subnet.private : subnet.cidr_block],
    ))) == 4
    error_message = "Subnet ranges must be distinct."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.embedder_from_lb.referenced_security_group_id == aws_security_group.embedder_lb.id
    error_message = "Embedder tasks admit only their load balancer."
  }

  assert {
    condition = toset([for rule in aws_vpc_security_group_ingress_rule.embedder_lb_from_clients : rule.referenced_security_group_id]) == toset([
      aws_security_group.router.id, aws_security_group.training.id,
    ])
    error_message = "The embedder load balancer admits routers and training tasks only."
  }

  assert {
    condition = toset([for rule in aws_vpc_security_group_ingress_rule.database_from_clients : rule.referenced_security_group_id]) == toset([
      aws_security_group.router.id, aws_security_group.training.id,
    ]) && alltrue([for rule in aws_vpc_security_group_ingress_rule.database_from_clients : rule.from_port == 5432])
    error_message = "PostgreSQL admits routers and training tasks only, on 5432."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.router_from_alb.referenced_security_group_id == aws_security_group.alb.id && aws_vpc_security_group_ingress_rule.router_from_alb.from_port == 8000
    error_message = "Router tasks admit only the public load balancer, on the API port."
  }
}

run "network_needs_two_zones" {
  command = plan

  module {
    source = "./modules/network"
  }

  variables {
    name               = "mh-test"
    availability_zones = ["eu-west-1a"]
  }

  expect_failures = [var.availability_zones]
}

# --- database -----------------------------------------------------------------------------

run "database" {
  module {
    source = "./modules/database"
  }

  variables {
    name              = "mh-test"
    subnet_ids        = ["subnet-a", "subnet-b"]
    security_group_id = "sg-db"
  }

  assert {
    condition     = aws_db_instance.this.manage_master_user_password && aws_db_instance.this.storage_encrypted && !aws_db_instance.this.publicly_accessible
    error_message = "RDS keeps the password in Secrets Manager, encrypts storage and stays private."
  }

  assert {
    condition     = aws_db_instance.this.engine == "postgres" && aws_db_parameter_group.this.family == "postgres16"
    error_message = "PostgreSQL 16 by default."
  }

  assert {
    condition     = aws_db_instance.this.backup_retention_period >= 1 && aws_db_instance.this.deletion_protection
    error_message = "Backups on and deletion protection on by default."
  }
}

run "database_rejects_old_postgres" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    name              = "mh-test"
    subnet_ids        = ["subnet-a", "subnet-b"]
    security_group_id = "sg-db"
    engine_version    = "15.7"
  }

  expect_failures = [var.engine_version]
}

# --- ECR and S3 -------------------------------------------------------------------------------

run "ecr" {
  module {
    source = "./modules/ecr"
  }

  variables {
    name_prefix = "mh-test"
  }

  assert {
    condition     = alltrue([for repo in aws_ecr_repository.this : repo.image_scanning_configuration[0].scan_on_push])
    error_message = "Every repository scans on push."
  }

  assert {
    condition     = length(aws_ecr_lifecycle_policy.this) == 4 && aws_ecr_repository.this["router"].name == "mh-test/router"
    error_message = "Four repositories with lifecycle policies."
  }
}

run "model_store" {
  module {
    source = "./modules/model_store"
  }

  variables {
    bucket_name = "mh-test-models"
  }

  assert {
    condition     = aws_s3_bucket_versioning.this.versioning_configuration[0].status == "Enabled"
    error_message = "The model store is versioned."
  }

  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.this.block_public_acls,
      aws_s3_bucket_public_access_block.this.block_public_policy,
      aws_s3_bucket_public_access_block.this.ignore_public_acls,
      aws_s3_bucket_public_access_block.this.restrict_public_buckets,
    ])
    error_message = "The model store is never public."
  }
}

# --- ECS cluster and alarms -------------------------------------------------------------------

run "cluster_with_gpu_capacity" {
  module {
    source = "./modules/ecs_cluster"
  }

  variables {
    name                  = "mh-test"
    enable_gpu            = true
    gpu_subnet_ids        = ["subnet-a", "subnet-b"]
    gpu_security_group_id = "sg-gpu"
  }

  assert {
    condition     = length(aws_ecs_capacity_provider.gpu) == 1 && contains(aws_ecs_cluster_capacity_providers.this.capacity_providers, "mh-test-gpu")
    error_message = "enable_gpu attaches a GPU capacity provider to the cluster."
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.gpu[0].user_data), "ECS_ENABLE_GPU_SUPPORT=true") && strcontains(base64decode(aws_launch_template.gpu[0].user_data), "ECS_CLUSTER=mh-test")
    error_message = "GPU instances join the cluster with GPU support on."
  }

  assert {
    condition     = aws_launch_template.gpu[0].metadata_options[0].http_tokens == "required"
    error_message = "GPU instances require IMDSv2."
  }
}

run "cluster_without_gpu" {
  module {
    source = "./modules/ecs_cluster"
  }

  variables {
    name = "mh-test"
  }

  assert {
    condition     = length(aws_autoscaling_group.gpu) == 0 && output.gpu_capacity_provider_name == null
    error_message = "No GPU instances unless asked for."
  }
}

run "alarms" {
  module {
    source = "./modules/monitoring"
  }

  variables {
    name                   = "mh-test"
    create_topic           = true
    alarm_emails           = ["oncall@example.com"]
    db_instance_identifier = "mh-test"
    router = {
      alb_arn_suffix          = "app/mh-test-router/0123456789abcdef"
      target_group_arn_suffix = "targetgroup/mh-test-router/0123456789abcdef"
    }
    embedder = {
      load_balancer_arn_suffix = "net/mh-test-embedder/0123456789abcdef"
      target_group_arn_suffix  = "targetgroup/mh-test-embedder/0123456789abcdef"
    }
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.router_p99_latency.extended_statistic == "p99" && aws_cloudwatch_metric_alarm.embedder_unhealthy_hosts.namespace == "AWS/NetworkELB"
    error_message = "p99 latency on the router, unhealthy hosts on the embedder NLB."
  }

  assert {
    condition = alltrue([
      for alarm in [
        aws_cloudwatch_metric_alarm.router_5xx_rate, aws_cloudwatch_metric_alarm.router_p99_latency,
        aws_cloudwatch_metric_alarm.embedder_unhealthy_hosts, aws_cloudwatch_metric_alarm.db_cpu,
        aws_cloudwatch_metric_alarm.db_free_storage,
      ] : alarm.alarm_actions == toset([aws_sns_topic.alarms[0].arn])
    ])
    error_message = "Every alarm notifies the SNS topic."
  }
}

# --- embedder -----------------------------------------------------------------------------------

run "embedder_on_fargate" {
  module {
    source = "./modules/embedder"
  }

  variables {
    name                   = "mh-test"
    cluster_name           = "mh-test"
    vpc_id                 = "vpc-1"
    subnet_ids             = ["subnet-a", "subnet-b"]
    lb_security_group_id   = "sg-lb"
    task_security_group_id = "sg-task"
    image                  = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mh-test/embedder-cpu:abc"
    cache_size             = 100000
  }

  assert {
    condition     = aws_ecs_task_definition.this.requires_compatibilities == toset(["FARGATE"]) && !can(jsondecode(aws_ecs_task_definition.this.container_definitions)[0].resourceRequirements)
    error_message = "Without GPU the embedder is a Fargate task with no GPU requirement."
  }

  assert {
    condition = {
      for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment : pair.name => pair.value
      if contains(["EMBEDDER_ADDRESS", "EMBEDDER_MODEL", "EMBEDDER_METRICS_ADDRESS", "EMBEDDER_CACHE_SIZE"], pair.name)
      } == {
      EMBEDDER_ADDRESS         = "0.0.0.0:50051"
      EMBEDDER_MODEL           = "/srv/embedders/minilm-l6-v2"
      EMBEDDER_METRICS_ADDRESS = "0.0.0.0"
      EMBEDDER_CACHE_SIZE      = "100000"
    }
    error_message = "The embedder listens on all interfaces and gets its model and cache size from variables."
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.this.container_definitions)[0].healthCheck.command == ["CMD", "python", "-m", "embedder", "health", "--address", "127.0.0.1:50051"]
    error_message = "The container health check is the grpc.health.v1 probe."
  }

  assert {
    condition     = aws_lb.this.internal && aws_lb.this.load_balancer_type == "network" && aws_lb.this.enable_cross_zone_load_balancing
    error_message = "Internal NLB with cross-zone balancing."
  }

  assert {
    condition     = aws_lb_target_group.this.protocol == "TCP" && aws_lb_target_group.this.port == 50051 && aws_lb_listener.grpc.port == 50051
    error_message = "TCP pass-through of the gRPC port."
  }

  assert {
    condition     = aws_appautoscaling_policy.cpu.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ECSServiceAverageCPUUtilization"
    error_message = "The embedder scales on CPU."
  }
}

run "embedder_on_gpu" {
  module {
    source = "./modules/embedder"
  }

  variables {
    name                       = "mh-test"
    cluster_name               = "mh-test"
    vpc_id                     = "vpc-1"
    subnet_ids                 = ["subnet-a", "subnet-b"]
    lb_security_group_id       = "sg-lb"
    task_security_group_id     = "sg-task"
    image                      = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mh-test/embedder-gpu:abc"
    use_gpu                    = true
    gpu_capacity_provider_name = "mh-test-gpu"
    cpu                        = 3072
    memory                     = 12288
  }

  assert {
    condition     = aws_ecs_task_definition.this.requires_compatibilities == toset(["EC2"])
    error_message = "The GPU embedder runs on EC2 container instances."
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.this.container_definitions)[0].resourceRequirements == [{ type = "GPU", value = "1" }]
    error_message = "The GPU embedder reserves one GPU."
  }

  assert {
    condition     = [for strategy in aws_ecs_service.this.capacity_provider_strategy : strategy.capacity_provider] == ["mh-test-gpu"]
    error_message = "The GPU embedder is placed by the GPU capacity provider."
  }
}

run "embedder_gpu_needs_capacity_provider" {
  command = plan

  module {
    source = "./modules/embedder"
  }

  variables {
    name                   = "mh-test"
    cluster_name           = "mh-test"
    vpc_id                 = "vpc-1"
    subnet_ids             = ["subnet-a", "subnet-b"]
    lb_security_group_id   = "sg-lb"
    task_security_group_id = "sg-task"
    image                  = "example/embedder-gpu:abc"
    use_gpu                = true
  }

  expect_failures = [aws_ecs_service.this]
}

# --- router ---------------------------------------------------------------------------------------

run "router" {
  module {
    source = "./modules/router"
  }

  variables {
    name                   = "mh-test"
    cluster_name           = "mh-test"
    vpc_id                 = "vpc-1"
    public_subnet_ids      = ["subnet-pa", "subnet-pb"]
    private_subnet_ids     = ["subnet-a", "subnet-b"]
    alb_security_group_id  = "sg-alb"
    task_security_group_id = "sg-router"
    image                  = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mh-test/router:abc"
    embedder_address       = "internal-embedder.elb.amazonaws.com:50051"
    certificate_arn        = "arn:aws:acm:eu-west-1:123456789012:certificate/mock"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
  }

  assert {
    condition = [for secret in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].secrets : "${secret.name}=${secret.valueFrom}"] == [
      "PGUSER=${var.secret_arn}:username::",
      "PGPASSWORD=${var.secret_arn}:password::",
    ]
    error_message = "PGUSER/PGPASSWORD come from the keys of the RDS-managed secret."
  }

  assert {
    condition = {
      for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment : pair.name => pair.value
      if contains(["EMBEDDER_ADDRESS", "MODEL_STORE", "PGHOST", "PGDATABASE", "API_PORT"], pair.name)
      } == {
      EMBEDDER_ADDRESS = "internal-embedder.elb.amazonaws.com:50051"
      MODEL_STORE      = "/srv/models"
      PGHOST           = "db.internal"
      PGDATABASE       = "manyheads"
      API_PORT         = "8000"
    }
    error_message = "Router environment: embedder address, model store folder, libpq variables, port."
  }

  assert {
    condition     = !can(regex("(?i)password|DATABASE_URL", jsonencode(jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment)))
    error_message = "No password (and no DSN) in plain environment variables."
  }

  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.this.container_definitions)[0].mountPoints == [{ sourceVolume = "models", containerPath = "/srv/models", readOnly = true }] &&
      jsondecode(aws_ecs_task_definition.this.container_definitions)[1].mountPoints == [{ sourceVolume = "models", containerPath = "/srv/models", readOnly = false }]
    )
    error_message = "The sidecar writes the shared volume, the router mounts it read-only."
  }

  assert {
    condition     = strcontains(jsondecode(aws_ecs_task_definition.this.container_definitions)[1].command[0], "aws s3 sync 's3://mh-test-models/models' '/srv/models' --delete")
    error_message = "The sidecar mirrors s3://<bucket>/models into /srv/models, deleting what S3 no longer has."
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.this.container_definitions)[0].dependsOn == [{ containerName = "model-sync", condition = "HEALTHY" }]
    error_message = "The router starts after the first successful sync."
  }

  assert {
    condition     = aws_lb_target_group.this.health_check[0].path == "/readyz" && aws_lb_target_group.this.port == 8000
    error_message = "The load balancer checks /readyz on the API port."
  }

  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "redirect" && length(aws_lb_listener.https) == 1
    error_message = "With a certificate: HTTPS listener, and HTTP redirects to it."
  }

  assert {
    condition     = jsondecode(aws_iam_role_policy.execution_secret.policy).Statement[0].Resource == [var.secret_arn] && length(jsondecode(aws_iam_role_policy.execution_secret.policy).Statement) == 1
    error_message = "The execution role reads exactly the database secret."
  }

  assert {
    condition     = !strcontains(aws_iam_role_policy.task_model_store.policy, "PutObject") && !strcontains(aws_iam_role_policy.task_model_store.policy, "DeleteObject")
    error_message = "Routers only read the model store."
  }

  assert {
    condition     = aws_appautoscaling_policy.requests.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ALBRequestCountPerTarget"
    error_message = "Routers scale on requests per target as well as CPU."
  }
}

run "router_http_only" {
  module {
    source = "./modules/router"
  }

  variables {
    name                   = "mh-test"
    cluster_name           = "mh-test"
    vpc_id                 = "vpc-1"
    public_subnet_ids      = ["subnet-pa", "subnet-pb"]
    private_subnet_ids     = ["subnet-a", "subnet-b"]
    alb_security_group_id  = "sg-alb"
    task_security_group_id = "sg-router"
    image                  = "example/router:abc"
    embedder_address       = "embedder:50051"
    certificate_arn        = null
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
  }

  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "forward" && length(aws_lb_listener.https) == 0
    error_message = "Without a certificate the HTTP listener forwards to the routers."
  }
}

# --- training -------------------------------------------------------------------------------------

run "training" {
  module {
    source = "./modules/training"
  }

  variables {
    name                = "mh-test"
    cluster_arn         = "arn:aws:ecs:eu-west-1:123456789012:cluster/mh-test"
    subnet_ids          = ["subnet-a", "subnet-b"]
    security_group_id   = "sg-training"
    image               = "example/training:abc"
    schedule_expression = "cron(0 3 * * ? *)"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
  }

  assert {
    condition = [for container in jsondecode(aws_ecs_task_definition.this.container_definitions) : "${container.name}:${container.essential}"] == [
      "fetch:false", "train:false", "publish:true",
    ]
    error_message = "fetch, train, publish; only publish is essential."
  }

  assert {
    condition = [for container in jsondecode(aws_ecs_task_definition.this.container_definitions) : try(container.dependsOn[0].condition, "")] == [
      "", "SUCCESS", "SUCCESS",
    ]
    error_message = "Each step runs only after the previous one succeeded."
  }

  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.this.container_definitions)[1].command == ["train", "--config", "/srv/training/heads.yaml"] &&
      [for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[1].environment : pair.value if pair.name == "MODEL_STORE"] == ["/srv/models"]
    )
    error_message = "python -m heads train --config <file>, with the store in MODEL_STORE."
  }

  assert {
    condition = (
      strcontains(jsondecode(aws_ecs_task_definition.this.container_definitions)[2].command[0], "--exclude '*/serving.json'") &&
      !strcontains(jsondecode(aws_ecs_task_definition.this.container_definitions)[2].command[0], "--delete")
    )
    error_message = "Publishing uploads the serving pointers last and never deletes."
  }

  assert {
    condition = (
      [for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[1].environment : pair.value if pair.name == "DATABASE_URL"] == ["dbname=manyheads"] &&
      [for secret in jsondecode(aws_ecs_task_definition.this.container_definitions)[1].secrets : secret.valueFrom] == ["${var.secret_arn}:username::", "${var.secret_arn}:password::"]
    )
    error_message = "Training gets a credential-free DSN; user and password come from the secret."
  }

  assert {
    condition     = strcontains(jsondecode(aws_ecs_task_definition.this.container_definitions)[0].command[0], "chown -R 10001:10001")
    error_message = "The fetch step hands the volumes to the training image's user."
  }

  assert {
    condition     = strcontains(aws_iam_role_policy.task_model_store.policy, "s3:PutObject") && !strcontains(aws_iam_role_policy.task_model_store.policy, "DeleteObject")
    error_message = "Training writes the model store but cannot delete from it."
  }

  assert {
    condition     = length(aws_cloudwatch_event_target.schedule) == 1
    error_message = "A schedule expression creates the EventBridge rule and target."
  }
}
