output "api_url" {
  description = "Base URL of the public API (router load balancer)."
  value       = module.router.url
}

output "alb_dns_name" {
  description = "DNS name of the router load balancer (point a CNAME or Route 53 alias at it)."
  value       = module.router.alb_dns_name
}

output "embedder_address" {
  description = "EMBEDDER_ADDRESS inside the VPC (internal NLB)."
  value       = module.embedder.address
}

output "ecr_repository_urls" {
  description = "Where to push each image role."
  value       = module.ecr.repository_urls
}

output "model_store_bucket" {
  value = module.model_store.bucket_name
}

output "db_address" {
  value = module.database.address
}

output "db_master_user_secret_arn" {
  description = "ARN of the RDS-managed secret of the owner (master user), for migrations and key management (the password itself is never output)."
  value       = module.database.master_user_secret_arn
}

output "db_service_secret_arns" {
  description = "ARN of the router's and training's own database secrets (least-privilege roles)."
  value       = module.database.service_secret_arns
}

output "migrations_task_definition" {
  description = "Family of the migrations task (latest revision): run it before the first routers, and after each release that brings a migration."
  value       = module.migrations.task_definition_family
}

output "migrations_network_configuration" {
  description = "--network-configuration value for `aws ecs run-task` of the migrations task."
  value = jsonencode({
    awsvpcConfiguration = {
      subnets        = module.network.private_subnet_ids
      securityGroups = [module.network.security_group_ids.migrations]
      assignPublicIp = "DISABLED"
    }
  })
}

output "router_metrics_key_secret_arn" {
  description = "Secret to put an operator API key into, for the routers' metrics collector (docs/deployment.md)."
  value       = module.router.metrics_key_secret_arn
}

output "cluster_name" {
  value = module.cluster.cluster_name
}

output "training_task_definition" {
  description = "Family of the training task (latest revision) for `aws ecs run-task`."
  value       = module.training.task_definition_family
}

output "training_network_configuration" {
  description = "--network-configuration value for `aws ecs run-task` of the training task."
  value = jsonencode({
    awsvpcConfiguration = {
      subnets        = module.network.private_subnet_ids
      securityGroups = [module.network.security_group_ids.training]
      assignPublicIp = "DISABLED"
    }
  })
}

output "log_groups" {
  value = {
    embedder   = module.embedder.log_group_name
    router     = module.router.log_group_name
    training   = module.training.log_group_name
    migrations = module.migrations.log_group_name
  }
}

output "alarm_topic_arn" {
  value = module.monitoring.topic_arn
}
