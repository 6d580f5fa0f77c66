# manyheads on AWS: one ECS cluster running
#   - the embedder (gRPC, TensorFlow) behind an internal NLB, on Fargate or GPU instances,
#   - the HTTP routers (gunicorn + model-sync and metrics sidecars) behind a public HTTPS ALB,
#     on Fargate, with their inference-log spool on EFS,
#   - one-shot training tasks (manual or scheduled) that publish heads to S3,
#   - a one-shot migrations task that updates the schema and the services' database roles,
# with PostgreSQL on RDS for the inference log. See docs/deployment.md.

locals {
  name = "${var.project}-${var.environment}"

  image_tags = merge(
    { for role in ["embedder-cpu", "embedder-gpu", "router", "training"] : role => var.image_tag },
    var.image_tag_overrides,
  )
  images = { for role, url in module.ecr.repository_urls : role => "${url}:${local.image_tags[role]}" }

  embedder_role = var.embedder_use_gpu ? "embedder-gpu" : "embedder-cpu"
  bucket_name   = coalesce(var.model_store_bucket_name, "${local.name}-models-${data.aws_caller_identity.current.account_id}")

  # Each service logs in with its own role and secret; only the migrations use the owner's.
  database = {
    host        = module.database.address
    port        = module.database.port
    name        = module.database.database_name
    kms_key_arn = module.database.master_user_secret_kms_key_arn
  }
  database_as = { for who, arn in merge(module.database.service_secret_arns, { owner = module.database.master_user_secret_arn }) :
    who => merge(local.database, { secret_arn = arn })
  }
}

data "aws_caller_identity" "current" {}

module "network" {
  source = "./modules/network"

  name               = local.name
  vpc_cidr           = var.vpc_cidr
  availability_zones = var.availability_zones
  single_nat_gateway = var.single_nat_gateway
  alb_ingress_cidrs  = var.alb_ingress_cidrs
}

module "ecr" {
  source = "./modules/ecr"

  name_prefix = local.name
  keep_images = var.ecr_keep_images
}

module "model_store" {
  source = "./modules/model_store"

  bucket_name   = local.bucket_name
  force_destroy = var.model_store_force_destroy
}

module "database" {
  source = "./modules/database"

  name                     = local.name
  subnet_ids               = module.network.private_subnet_ids
  security_group_id        = module.network.security_group_ids.database
  engine_version           = var.db_engine_version
  instance_class           = var.db_instance_class
  allocated_storage_gb     = var.db_allocated_storage_gb
  max_allocated_storage_gb = var.db_max_allocated_storage_gb
  multi_az                 = var.db_multi_az
  backup_retention_days    = var.db_backup_retention_days
  deletion_protection      = var.db_deletion_protection
  skip_final_snapshot      = var.db_skip_final_snapshot
  log_retention_days       = var.log_retention_days
}

module "cluster" {
  source = "./modules/ecs_cluster"

  name                  = local.name
  container_insights    = var.container_insights
  enable_gpu            = var.embedder_use_gpu
  gpu_instance_type     = var.gpu_instance_type
  gpu_max_instances     = var.gpu_max_instances
  gpu_subnet_ids        = module.network.private_subnet_ids
  gpu_security_group_id = module.network.security_group_ids.gpu_instances
}

module "embedder" {
  source = "./modules/embedder"

  name                       = local.name
  cluster_name               = module.cluster.cluster_name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  lb_security_group_id       = module.network.security_group_ids.embedder_lb
  task_security_group_id     = module.network.security_group_ids.embedder
  image                      = local.images[local.embedder_role]
  use_gpu                    = var.embedder_use_gpu
  gpu_capacity_provider_name = module.cluster.gpu_capacity_provider_name
  cpu                        = var.embedder_cpu
  memory                     = var.embedder_memory
  min_count                  = var.embedder_min_count
  max_count                  = var.embedder_max_count
  cpu_target_percent         = var.embedder_cpu_target_percent
  model                      = var.embedder_model
  cache_size                 = var.embedder_cache_size
  max_batch_size             = var.embedder_max_batch_size
  grpc_threads               = var.embedder_grpc_threads
  lanes                      = var.embedder_lanes
  tf_threads                 = var.embedder_tf_threads
  extra_environment          = var.embedder_extra_environment
  log_retention_days         = var.log_retention_days
}

module "router" {
  source = "./modules/router"

  name                    = local.name
  cluster_name            = module.cluster.cluster_name
  vpc_id                  = module.network.vpc_id
  public_subnet_ids       = module.network.public_subnet_ids
  private_subnet_ids      = module.network.private_subnet_ids
  alb_security_group_id   = module.network.security_group_ids.alb
  task_security_group_id  = module.network.security_group_ids.router
  image                   = local.images["router"]
  cpu                     = var.router_cpu
  memory                  = var.router_memory
  min_count               = var.router_min_count
  max_count               = var.router_max_count
  cpu_target_percent      = var.router_cpu_target_percent
  requests_per_target     = var.router_requests_per_target
  workers                 = var.router_workers
  threads                 = var.router_threads
  extra_environment       = var.router_extra_environment
  embedder_address        = module.embedder.address
  database                = local.database_as["router"]
  certificate_arn         = var.certificate_arn
  allow_plain_http        = var.allow_plain_http
  spool_security_group_id = module.network.security_group_ids.router_spool
  model_sync_image        = var.aws_cli_image
  model_sync_interval_s   = var.model_sync_interval_s
  log_retention_days      = var.log_retention_days

  model_store = {
    bucket     = module.model_store.bucket_name
    bucket_arn = module.model_store.bucket_arn
  }
}

module "training" {
  source = "./modules/training"

  name                = local.name
  cluster_arn         = module.cluster.cluster_arn
  subnet_ids          = module.network.private_subnet_ids
  security_group_id   = module.network.security_group_ids.training
  image               = local.images["training"]
  cpu                 = var.training_cpu
  memory              = var.training_memory
  config_file         = var.training_config_file
  promote             = var.training_promote
  schedule_expression = var.training_schedule_expression
  publish_last        = var.model_store_publish_last
  aws_cli_image       = var.aws_cli_image
  database            = local.database_as["training"]
  log_retention_days  = var.log_retention_days

  model_store = {
    bucket     = module.model_store.bucket_name
    bucket_arn = module.model_store.bucket_arn
  }
}

module "migrations" {
  source = "./modules/migrations"

  name                = local.name
  image               = local.images["router"]
  psql_image          = var.psql_image
  database            = local.database_as["owner"]
  service_roles       = module.database.service_roles
  service_secret_arns = module.database.service_secret_arns
  log_retention_days  = var.log_retention_days
}

module "monitoring" {
  source = "./modules/monitoring"

  name                   = local.name
  create_topic           = var.create_alarm_topic
  alarm_emails           = var.alarm_emails
  existing_topic_arn     = var.existing_alarm_topic_arn
  db_instance_identifier = module.database.instance_identifier
  router_5xx_percent     = var.router_5xx_alarm_percent
  router_p99_seconds     = var.router_p99_alarm_seconds

  router = {
    alb_arn_suffix          = module.router.alb_arn_suffix
    target_group_arn_suffix = module.router.target_group_arn_suffix
    metrics_namespace       = module.router.metrics_namespace
  }

  embedder = {
    load_balancer_arn_suffix = module.embedder.load_balancer_arn_suffix
    target_group_arn_suffix  = module.embedder.target_group_arn_suffix
  }
}
