output "address" {
  description = "host:port for EMBEDDER_ADDRESS of routers and training tasks."
  value       = "${aws_lb.this.dns_name}:${var.port}"
}

output "service_name" {
  value = aws_ecs_service.this.name
}

output "load_balancer_arn_suffix" {
  value = aws_lb.this.arn_suffix
}

output "target_group_arn_suffix" {
  value = aws_lb_target_group.this.arn_suffix
}

output "log_group_name" {
  value = aws_cloudwatch_log_group.this.name
}
