# Alarms for what users feel (router errors, latency, unhealthy router tasks), for the
# inference log (rows lost or waiting in the spool), for the embedder behind the routers, and
# for the database. Actions go to an optional SNS topic; without one the alarms still show in
# the console.

locals {
  actions = compact(concat(
    [for topic in aws_sns_topic.alarms : topic.arn],
    [var.existing_topic_arn],
  ))
}

resource "aws_sns_topic" "alarms" {
  count = var.create_topic ? 1 : 0
  name  = "${var.name}-alarms"
}

resource "aws_sns_topic_subscription" "email" {
  for_each = var.create_topic ? toset(var.alarm_emails) : toset([])

  topic_arn = aws_sns_topic.alarms[0].arn
  protocol  = "email"
  endpoint  = each.value
}

# --- router -----------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "router_5xx_rate" {
  alarm_name          = "${var.name}-router-5xx-rate"
  alarm_description   = "More than ${var.router_5xx_percent}% of API requests failed with 5xx (targets or load balancer)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.router_5xx_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "rate"
    expression  = "IF(requests > 0, 100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests, 0)"
    label       = "5xx percent"
    return_data = true
  }

  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = { LoadBalancer = var.router.alb_arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "target5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = { LoadBalancer = var.router.alb_arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "elb5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = var.router.alb_arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "router_p99_latency" {
  alarm_name          = "${var.name}-router-p99-latency"
  alarm_description   = "p99 of the router response time is above ${var.router_p99_seconds}s."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = { LoadBalancer = var.router.alb_arn_suffix, TargetGroup = var.router.target_group_arn_suffix }
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.router_p99_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "router_unhealthy_hosts" {
  alarm_name          = "${var.name}-router-unhealthy-hosts"
  alarm_description   = "A router task fails the load balancer health check (/readyz) and gets no traffic."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.router.alb_arn_suffix, TargetGroup = var.router.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "router_no_healthy_hosts" {
  alarm_name          = "${var.name}-router-no-healthy-hosts"
  alarm_description   = "No router task is healthy: every API request fails."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = var.router.alb_arn_suffix, TargetGroup = var.router.target_group_arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

# --- inference log: the routers' own counters (router module, metrics.tf) ------------------

resource "aws_cloudwatch_metric_alarm" "inference_rows" {
  for_each = {
    lost = {
      description = "Prediction rows were LOST: PostgreSQL did not take them and the spool could not keep them (router log: \"LOST\")."
      periods     = 1
    }
    spooled = {
      description = "Prediction rows wait in the spool for PostgreSQL (database down, refusing the router role, or too slow); they are replayed when it is back."
      periods     = var.spooled_rows_minutes
    }
    overflow_spooled = {
      description = "The routers' in-memory queue for PostgreSQL overflowed: rows wait in the spool because the database does not keep up."
      periods     = var.spooled_rows_minutes
    }
  }

  alarm_name          = "${var.name}-inference-rows-${replace(each.key, "_", "-")}"
  alarm_description   = each.value.description
  namespace           = var.router.metrics_namespace
  metric_name         = "router_inference_log_rows"
  dimensions          = { event = each.key }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = each.value.periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching" # a counter that never moved has no series at all
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

# Without this one the three above could stay quiet because nothing reaches CloudWatch.
resource "aws_cloudwatch_metric_alarm" "router_metrics_missing" {
  alarm_name          = "${var.name}-router-metrics-missing"
  alarm_description   = "A router task's /metrics cannot be scraped (no valid operator key in the metrics-key secret, collector down): the inference-rows alarms are blind."
  namespace           = var.router.metrics_namespace
  metric_name         = "router_metrics_up"
  dimensions          = { service = "router" }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 10
  datapoints_to_alarm = 5
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

# --- embedder ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "embedder_unhealthy_hosts" {
  alarm_name          = "${var.name}-embedder-unhealthy-hosts"
  alarm_description   = "An embedder task fails the load balancer health check."
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.embedder.load_balancer_arn_suffix, TargetGroup = var.embedder.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "embedder_no_healthy_hosts" {
  alarm_name          = "${var.name}-embedder-no-healthy-hosts"
  alarm_description   = "No embedder task is healthy: every prediction fails."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = var.embedder.load_balancer_arn_suffix, TargetGroup = var.embedder.target_group_arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

# --- database ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "db_cpu" {
  alarm_name          = "${var.name}-db-cpu"
  alarm_description   = "Database CPU above ${var.db_cpu_percent}% for 15 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = var.db_instance_identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.db_cpu_percent
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "db_free_storage" {
  alarm_name          = "${var.name}-db-free-storage"
  alarm_description   = "Less than ${var.db_free_storage_gb} GB of database storage left."
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = var.db_instance_identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = var.db_free_storage_gb * 1024 * 1024 * 1024
  alarm_actions       = local.actions
  ok_actions          = local.actions
}
