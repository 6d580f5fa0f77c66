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
  secret_arn          = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-mock-AbCdEf"
  router_secret_arn   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mh-test/database/router-AbCdEf"
  training_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mh-test/database/training-AbCdEf"
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
      aws_security_group.router.id, aws_security_group.training.id, aws_security_group.migrations.id,
    ]) && alltrue([for rule in aws_vpc_security_group_ingress_rule.database_from_clients : rule.from_port == 5432])
    error_message = "PostgreSQL admits routers, training and migration tasks only, on 5432."
  }

  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.router_spool_from_router.security_group_id == aws_security_group.router_spool.id &&
      aws_vpc_security_group_ingress_rule.router_spool_from_router.referenced_security_group_id == aws_security_group.router.id &&
      aws_vpc_security_group_ingress_rule.router_spool_from_router.from_port == 2049 &&
      output.security_group_ids.router_spool == aws_security_group.router_spool.id
    )
    error_message = "The spool's EFS mount targets admit NFS (2049) from router tasks only."
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

  assert {
    condition = (
      { for service, version in aws_secretsmanager_secret_version.service : service => jsondecode(version.secret_string).username } == { router = "manyheads_router", training = "manyheads_training" } &&
      alltrue([for service, version in aws_secretsmanager_secret_version.service : jsondecode(version.secret_string).password == data.aws_secretsmanager_random_password.service[service].random_password]) &&
      alltrue([for generated in data.aws_secretsmanager_random_password.service : generated.password_length == 40 && generated.exclude_punctuation])
    )
    error_message = "Router and training each get a secret of their own: the least-privilege role and a generated password."
  }

  assert {
    condition = (
      aws_secretsmanager_secret.service["router"].name == "mh-test/database/router" &&
      toset(keys(output.service_secret_arns)) == toset(["router", "training"]) &&
      !contains(values(output.service_secret_arns), output.master_user_secret_arn)
    )
    error_message = "The service secrets are separate from the master user's secret."
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
      metrics_namespace       = "mh-test/router"
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
    condition = (
      aws_cloudwatch_metric_alarm.router_unhealthy_hosts.namespace == "AWS/ApplicationELB" &&
      aws_cloudwatch_metric_alarm.router_unhealthy_hosts.metric_name == "UnHealthyHostCount" &&
      aws_cloudwatch_metric_alarm.router_unhealthy_hosts.dimensions.TargetGroup == "targetgroup/mh-test-router/0123456789abcdef" &&
      aws_cloudwatch_metric_alarm.router_unhealthy_hosts.threshold == 0 &&
      aws_cloudwatch_metric_alarm.router_no_healthy_hosts.metric_name == "HealthyHostCount" &&
      aws_cloudwatch_metric_alarm.router_no_healthy_hosts.comparison_operator == "LessThanThreshold" &&
      aws_cloudwatch_metric_alarm.router_no_healthy_hosts.treat_missing_data == "breaching"
    )
    error_message = "Alarms on unhealthy router targets and on a router target group with no healthy host."
  }

  assert {
    condition = {
      for event, alarm in aws_cloudwatch_metric_alarm.inference_rows : event => "${alarm.namespace} ${alarm.metric_name} ${alarm.dimensions.event} ${alarm.statistic} > ${alarm.threshold}"
      } == {
      lost             = "mh-test/router router_inference_log_rows lost Sum > 0"
      spooled          = "mh-test/router router_inference_log_rows spooled Sum > 0"
      overflow_spooled = "mh-test/router router_inference_log_rows overflow_spooled Sum > 0"
    }
    error_message = "Alarms on lost, spooled and overflow-spooled inference-log rows, from the routers' own counters."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.inference_rows["lost"].evaluation_periods == 1
    error_message = "One lost row is enough to alarm."
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.router_metrics_missing.namespace == "mh-test/router" &&
      aws_cloudwatch_metric_alarm.router_metrics_missing.metric_name == "router_metrics_up" &&
      aws_cloudwatch_metric_alarm.router_metrics_missing.treat_missing_data == "breaching"
    )
    error_message = "A broken metrics pipeline alarms instead of silencing the inference-rows alarms."
  }

  assert {
    condition = alltrue([
      for alarm in concat([
        aws_cloudwatch_metric_alarm.router_5xx_rate, aws_cloudwatch_metric_alarm.router_p99_latency,
        aws_cloudwatch_metric_alarm.router_unhealthy_hosts, aws_cloudwatch_metric_alarm.router_no_healthy_hosts,
        aws_cloudwatch_metric_alarm.router_metrics_missing,
        aws_cloudwatch_metric_alarm.embedder_unhealthy_hosts, aws_cloudwatch_metric_alarm.db_cpu,
        aws_cloudwatch_metric_alarm.db_free_storage,
      ], values(aws_cloudwatch_metric_alarm.inference_rows)) : alarm.alarm_actions == toset([aws_sns_topic.alarms[0].arn])
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
    name                    = "mh-test"
    cluster_name            = "mh-test"
    vpc_id                  = "vpc-1"
    public_subnet_ids       = ["subnet-pa", "subnet-pb"]
    private_subnet_ids      = ["subnet-a", "subnet-b"]
    alb_security_group_id   = "sg-alb"
    task_security_group_id  = "sg-router"
    spool_security_group_id = "sg-spool"
    embedder_address        = "internal-embedder.elb.amazonaws.com:50051"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.router_secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
    image           = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mh-test/router:abc"
    certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/mock"
  }

  assert {
    condition = [for secret in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].secrets : "${secret.name}=${secret.valueFrom}"] == [
      "PGUSER=${var.router_secret_arn}:username::",
      "PGPASSWORD=${var.router_secret_arn}:password::",
    ]
    error_message = "PGUSER/PGPASSWORD come from the keys of the router role's secret."
  }

  assert {
    condition = {
      for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment : pair.name => pair.value
      if contains(["API_HOST", "API_PORT", "API_SPOOL_DIR", "API_MIGRATE_ON_START", "EMBEDDER_ADDRESS", "MODEL_STORE", "PGHOST", "PGDATABASE"], pair.name)
      } == {
      API_HOST             = "0.0.0.0"
      API_PORT             = "8000"
      API_SPOOL_DIR        = "/srv/spool"
      API_MIGRATE_ON_START = "false"
      EMBEDDER_ADDRESS     = "internal-embedder.elb.amazonaws.com:50051"
      MODEL_STORE          = "/srv/models"
      PGHOST               = "db.internal"
      PGDATABASE           = "manyheads"
    }
    error_message = "Router environment: all interfaces (the image default is not relied on), port, spool on EFS, no migrations as the router role, embedder address, model store folder, libpq variables."
  }

  assert {
    condition     = !can(regex("(?i)password|DATABASE_URL", jsonencode(jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment)))
    error_message = "No password (and no DSN) in plain environment variables."
  }

  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.this.container_definitions)[0].mountPoints == [
        { sourceVolume = "models", containerPath = "/srv/models", readOnly = true },
        { sourceVolume = "spool", containerPath = "/srv/spool", readOnly = false },
      ] &&
      jsondecode(aws_ecs_task_definition.this.container_definitions)[1].mountPoints == [{ sourceVolume = "models", containerPath = "/srv/models", readOnly = false }]
    )
    error_message = "The sidecar writes the models volume, the router mounts it read-only and writes the spool at API_SPOOL_DIR."
  }

  # --- the spool on EFS

  assert {
    condition = (
      [for volume in aws_ecs_task_definition.this.volume : volume.name if length(volume.efs_volume_configuration) == 1] == ["spool"] &&
      one([for volume in aws_ecs_task_definition.this.volume : volume.efs_volume_configuration[0] if volume.name == "spool"]).file_system_id == aws_efs_file_system.spool.id &&
      one([for volume in aws_ecs_task_definition.this.volume : volume.efs_volume_configuration[0] if volume.name == "spool"]).transit_encryption == "ENABLED" &&
      one([for volume in aws_ecs_task_definition.this.volume : volume.efs_volume_configuration[0] if volume.name == "spool"]).authorization_config[0].access_point_id == aws_efs_access_point.spool.id &&
      one([for volume in aws_ecs_task_definition.this.volume : volume.efs_volume_configuration[0] if volume.name == "spool"]).authorization_config[0].iam == "ENABLED"
    )
    error_message = "The spool volume is the EFS file system, through its access point, over TLS, with the task role's identity: it outlives the task."
  }

  assert {
    condition     = aws_efs_file_system.spool.encrypted && aws_efs_file_system.spool.throughput_mode == "elastic"
    error_message = "The spool file system is encrypted at rest."
  }

  assert {
    condition     = [for target in aws_efs_mount_target.spool : target.subnet_id] == ["subnet-a", "subnet-b"] && alltrue([for target in aws_efs_mount_target.spool : target.security_groups == toset(["sg-spool"])])
    error_message = "One mount target in every zone of the router tasks, behind the spool security group."
  }

  assert {
    condition = (
      aws_efs_access_point.spool.posix_user[0].uid == 10001 && aws_efs_access_point.spool.posix_user[0].gid == 10001 &&
      aws_efs_access_point.spool.root_directory[0].path == "/router-spool" &&
      aws_efs_access_point.spool.root_directory[0].creation_info[0].owner_uid == 10001 &&
      aws_efs_access_point.spool.root_directory[0].creation_info[0].permissions == "0700"
    )
    error_message = "One folder for every router task, owned by the router image's user (10001), who every client becomes."
  }

  assert {
    condition = (
      jsondecode(aws_efs_file_system_policy.spool.policy).Statement[0].Principal.AWS == aws_iam_role.task.arn &&
      jsondecode(aws_efs_file_system_policy.spool.policy).Statement[0].Condition.StringEquals["elasticfilesystem:AccessPointArn"] == aws_efs_access_point.spool.arn &&
      jsondecode(aws_efs_file_system_policy.spool.policy).Statement[1].Effect == "Deny" &&
      jsondecode(aws_efs_file_system_policy.spool.policy).Statement[1].Condition.Bool["aws:SecureTransport"] == "false"
    )
    error_message = "Only the router task role mounts the spool, only through its access point, only over TLS."
  }

  # --- HTTPS

  assert {
    condition = (
      length(aws_lb_listener.https) == 1 && aws_lb_listener.https[0].port == 443 && aws_lb_listener.https[0].protocol == "HTTPS" &&
      aws_lb_listener.https[0].certificate_arn == "arn:aws:acm:eu-west-1:123456789012:certificate/mock" &&
      aws_lb_listener.https[0].ssl_policy == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    )
    error_message = "HTTPS on 443 with the certificate and a TLS 1.2+ policy."
  }

  assert {
    condition = (
      aws_lb_listener.http.default_action[0].type == "redirect" && aws_lb_listener.http.default_action[0].target_group_arn == null &&
      aws_lb_listener.http.default_action[0].redirect[0].protocol == "HTTPS" && aws_lb_listener.http.default_action[0].redirect[0].port == "443"
    )
    error_message = "Port 80 only redirects to HTTPS: it never forwards a request (and its API key) in clear text."
  }

  assert {
    condition     = output.url == "https://${aws_lb.this.dns_name}"
    error_message = "The API's URL is HTTPS."
  }

  assert {
    condition     = aws_lb_target_group.this.health_check[0].path == "/readyz" && aws_lb_target_group.this.port == 8000
    error_message = "The load balancer checks /readyz on the API port."
  }

  # --- metrics collector

  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.this.container_definitions)[2].name == "metrics-collector" &&
      !jsondecode(aws_ecs_task_definition.this.container_definitions)[2].essential &&
      jsondecode(aws_ecs_task_definition.this.container_definitions)[2].secrets == [{ name = "ROUTER_METRICS_KEY", valueFrom = aws_secretsmanager_secret.metrics_key.arn }]
    )
    error_message = "A non-essential collector sidecar gets the operator key from its own secret."
  }

  assert {
    condition = (
      yamldecode(one([for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[2].environment : pair.value if pair.name == "AOT_CONFIG_CONTENT"])).receivers.prometheus.config.scrape_configs[0].static_configs[0].targets == ["127.0.0.1:8000"] &&
      yamldecode(one([for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[2].environment : pair.value if pair.name == "AOT_CONFIG_CONTENT"])).receivers.prometheus.config.scrape_configs[0].metrics_path == "/metrics" &&
      yamldecode(one([for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[2].environment : pair.value if pair.name == "AOT_CONFIG_CONTENT"])).receivers.prometheus.config.scrape_configs[0].authorization.credentials == "$${env:ROUTER_METRICS_KEY}"
    )
    error_message = "The collector scrapes the router's /metrics in the task with the operator key (expanded from the environment, never in the task definition)."
  }

  assert {
    condition = (
      yamldecode(one([for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[2].environment : pair.value if pair.name == "AOT_CONFIG_CONTENT"])).exporters.awsemf.namespace == "mh-test/router" &&
      [for declaration in yamldecode(one([for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[2].environment : pair.value if pair.name == "AOT_CONFIG_CONTENT"])).exporters.awsemf.metric_declarations : declaration.dimensions] == [[["event"]], [["service"]]] &&
      strcontains(one([for pair in jsondecode(aws_ecs_task_definition.this.container_definitions)[2].environment : pair.value if pair.name == "AOT_CONFIG_CONTENT"]), "router_inference_log_rows") &&
      output.metrics_namespace == "mh-test/router"
    )
    error_message = "router_inference_log_rows (by event) and the scrape health reach CloudWatch as EMF in <name>/router."
  }

  assert {
    condition = (
      jsondecode(aws_iam_role_policy.task_metrics.policy).Statement[0].Resource == ["${aws_cloudwatch_log_group.metrics.arn}:*"] &&
      !strcontains(aws_iam_role_policy.task_metrics.policy, "PutMetricData")
    )
    error_message = "The collector writes its EMF log group and nothing else."
  }

  # --- IAM and scaling

  assert {
    condition = (
      jsondecode(aws_iam_role_policy.execution_secret.policy).Statement[0].Resource == [var.router_secret_arn, aws_secretsmanager_secret.metrics_key.arn] &&
      length(jsondecode(aws_iam_role_policy.execution_secret.policy).Statement) == 1
    )
    error_message = "The execution role reads exactly the router's database secret and the metrics key."
  }

  assert {
    condition     = !strcontains(aws_iam_role_policy.task_model_store.policy, "PutObject") && !strcontains(aws_iam_role_policy.task_model_store.policy, "DeleteObject")
    error_message = "Routers only read the model store."
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
    condition     = aws_appautoscaling_policy.requests.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ALBRequestCountPerTarget"
    error_message = "Routers scale on requests per target as well as CPU."
  }
}

run "router_needs_https" {
  command = plan

  module {
    source = "./modules/router"
  }

  variables {
    name                    = "mh-test"
    cluster_name            = "mh-test"
    vpc_id                  = "vpc-1"
    public_subnet_ids       = ["subnet-pa", "subnet-pb"]
    private_subnet_ids      = ["subnet-a", "subnet-b"]
    alb_security_group_id   = "sg-alb"
    task_security_group_id  = "sg-router"
    spool_security_group_id = "sg-spool"
    embedder_address        = "internal-embedder.elb.amazonaws.com:50051"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.router_secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
    image           = "example/router:abc"
    certificate_arn = null
  }

  expect_failures = [aws_lb_listener.http]
}

run "router_plain_http_only_when_allowed" {
  module {
    source = "./modules/router"
  }

  variables {
    name                    = "mh-test"
    cluster_name            = "mh-test"
    vpc_id                  = "vpc-1"
    public_subnet_ids       = ["subnet-pa", "subnet-pb"]
    private_subnet_ids      = ["subnet-a", "subnet-b"]
    alb_security_group_id   = "sg-alb"
    task_security_group_id  = "sg-router"
    spool_security_group_id = "sg-spool"
    embedder_address        = "internal-embedder.elb.amazonaws.com:50051"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.router_secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
    image            = "example/router:abc"
    certificate_arn  = null
    allow_plain_http = true
  }

  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "forward" && length(aws_lb_listener.https) == 0 && startswith(output.url, "http://")
    error_message = "Without a certificate, and only with allow_plain_http, the HTTP listener forwards to the routers."
  }
}

run "router_refuses_tls_below_1_2" {
  command = plan

  module {
    source = "./modules/router"
  }

  variables {
    name                    = "mh-test"
    cluster_name            = "mh-test"
    vpc_id                  = "vpc-1"
    public_subnet_ids       = ["subnet-pa", "subnet-pb"]
    private_subnet_ids      = ["subnet-a", "subnet-b"]
    alb_security_group_id   = "sg-alb"
    task_security_group_id  = "sg-router"
    spool_security_group_id = "sg-spool"
    embedder_address        = "internal-embedder.elb.amazonaws.com:50051"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.router_secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
    image           = "example/router:abc"
    certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/mock"
    ssl_policy      = "ELBSecurityPolicy-2016-08"
  }

  expect_failures = [var.ssl_policy]
}

run "router_environment_cannot_move_host_or_spool" {
  command = plan

  module {
    source = "./modules/router"
  }

  variables {
    name                    = "mh-test"
    cluster_name            = "mh-test"
    vpc_id                  = "vpc-1"
    public_subnet_ids       = ["subnet-pa", "subnet-pb"]
    private_subnet_ids      = ["subnet-a", "subnet-b"]
    alb_security_group_id   = "sg-alb"
    task_security_group_id  = "sg-router"
    spool_security_group_id = "sg-spool"
    embedder_address        = "internal-embedder.elb.amazonaws.com:50051"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.router_secret_arn
    }
    model_store = {
      bucket     = "mh-test-models"
      bucket_arn = "arn:aws:s3:::mh-test-models"
    }
    image             = "example/router:abc"
    certificate_arn   = "arn:aws:acm:eu-west-1:123456789012:certificate/mock"
    extra_environment = { API_HOST = "127.0.0.1", API_SPOOL_DIR = "var/spool" }
  }

  expect_failures = [var.extra_environment]
}

# --- migrations -----------------------------------------------------------------------------------

run "migrations" {
  module {
    source = "./modules/migrations"
  }

  variables {
    name  = "mh-test"
    image = "example/router:abc"
    database = {
      host       = "db.internal"
      port       = 5432
      name       = "manyheads"
      secret_arn = var.secret_arn
    }
    service_roles       = { router = "manyheads_router", training = "manyheads_training" }
    service_secret_arns = { router = var.router_secret_arn, training = var.training_secret_arn }
  }

  assert {
    condition = (
      [for container in jsondecode(aws_ecs_task_definition.this.container_definitions) : "${container.name}:${container.essential}"] == ["migrate:false", "role-passwords:true"] &&
      jsondecode(aws_ecs_task_definition.this.container_definitions)[0].command == ["python", "-m", "api", "migrate", "--wait-s", "300"] &&
      jsondecode(aws_ecs_task_definition.this.container_definitions)[1].dependsOn == [{ containerName = "migrate", condition = "SUCCESS" }]
    )
    error_message = "migrate (python -m api migrate), then role-passwords only if it succeeded."
  }

  assert {
    condition = alltrue([
      for container in jsondecode(aws_ecs_task_definition.this.container_definitions) :
      slice(container.secrets, 0, 2) == [
        { name = "PGUSER", valueFrom = "${var.secret_arn}:username::" },
        { name = "PGPASSWORD", valueFrom = "${var.secret_arn}:password::" },
      ]
    ])
    error_message = "Migrations run as the owner (the master user's secret)."
  }

  assert {
    condition = (
      slice(jsondecode(aws_ecs_task_definition.this.container_definitions)[1].secrets, 2, 4) == [
        { name = "ROUTER_DB_PASSWORD", valueFrom = "${var.router_secret_arn}:password::" },
        { name = "TRAINING_DB_PASSWORD", valueFrom = "${var.training_secret_arn}:password::" },
      ] &&
      strcontains(jsondecode(aws_ecs_task_definition.this.container_definitions)[1].command[0], "\\set router_password `printenv ROUTER_DB_PASSWORD`") &&
      strcontains(jsondecode(aws_ecs_task_definition.this.container_definitions)[1].command[0], "ALTER ROLE manyheads_router WITH LOGIN PASSWORD :'router_password';") &&
      strcontains(jsondecode(aws_ecs_task_definition.this.container_definitions)[1].command[0], "ALTER ROLE manyheads_training WITH LOGIN PASSWORD :'training_password';")
    )
    error_message = "Each service role gets the password of its own secret, read from the environment (never on a command line)."
  }

  assert {
    condition     = !can(regex("(?i)password", jsonencode(jsondecode(aws_ecs_task_definition.this.container_definitions)[1].environment)))
    error_message = "No password in plain environment variables."
  }

  assert {
    condition     = jsondecode(aws_iam_role_policy.execution_secrets.policy).Statement[0].Resource == [var.secret_arn, var.router_secret_arn, var.training_secret_arn]
    error_message = "The execution role reads the owner's and the services' secrets, nothing else."
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
