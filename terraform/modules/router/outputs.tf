output "url" {
  description = "Base URL of the API."
  value       = "${local.https ? "https" : "http"}://${aws_lb.this.dns_name}"
}

output "alb_dns_name" {
  value = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "For a Route 53 alias record."
  value       = aws_lb.this.zone_id
}

output "alb_arn_suffix" {
  value = aws_lb.this.arn_suffix
}

output "target_group_arn_suffix" {
  value = aws_lb_target_group.this.arn_suffix
}

output "service_name" {
  value = aws_ecs_service.this.name
}

output "log_group_name" {
  value = aws_cloudwatch_log_group.this.name
}

output "spool" {
  description = "The EFS file system and access point of the spool (API_SPOOL_DIR)."
  value = {
    file_system_id  = aws_efs_file_system.spool.id
    access_point_id = aws_efs_access_point.spool.id
    path            = local.spool_path
  }
}

output "metrics_namespace" {
  description = "CloudWatch namespace of the router's own metrics (inference-log rows, scrape health)."
  value       = local.metrics_namespace
}

output "metrics_key_secret_arn" {
  description = "Secret to put the metrics collector's operator API key into."
  value       = aws_secretsmanager_secret.metrics_key.arn
}

output "database_secret_arn" {
  description = "The secret the routers log in with (the router role's)."
  value       = var.database.secret_arn
}
