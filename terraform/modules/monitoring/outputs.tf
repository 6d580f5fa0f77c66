output "topic_arn" {
  description = "The created SNS topic, or null."
  value       = var.create_topic ? aws_sns_topic.alarms[0].arn : null
}

output "alarm_names" {
  value = [
    aws_cloudwatch_metric_alarm.router_5xx_rate.alarm_name,
    aws_cloudwatch_metric_alarm.router_p99_latency.alarm_name,
    aws_cloudwatch_metric_alarm.router_unhealthy_hosts.alarm_name,
    aws_cloudwatch_metric_alarm.router_no_healthy_hosts.alarm_name,
    aws_cloudwatch_metric_alarm.inference_rows["lost"].alarm_name,
    aws_cloudwatch_metric_alarm.inference_rows["spooled"].alarm_name,
    aws_cloudwatch_metric_alarm.inference_rows["overflow_spooled"].alarm_name,
    aws_cloudwatch_metric_alarm.router_metrics_missing.alarm_name,
    aws_cloudwatch_metric_alarm.embedder_unhealthy_hosts.alarm_name,
    aws_cloudwatch_metric_alarm.embedder_no_healthy_hosts.alarm_name,
    aws_cloudwatch_metric_alarm.db_cpu.alarm_name,
    aws_cloudwatch_metric_alarm.db_free_storage.alarm_name,
  ]
}
