# Router metrics in CloudWatch, for the alarms on lost and spooled inference-log rows.
#
# The router exposes Prometheus at /metrics, for operator keys only. A collector sidecar in
# every task (the AWS Distro for OpenTelemetry collector) scrapes 127.0.0.1:<port>/metrics
# once a minute with the operator key of the secret below, keeps only the metrics the alarms
# need, and writes them as CloudWatch embedded-metric-format (EMF) log events, which CloudWatch
# turns into metrics in the namespace <name>/router:
#
#   router_inference_log_rows  dimension event (lost, spooled, overflow_spooled, written, ...):
#                              rows per minute (the exporter turns the counters into deltas)
#   router_metrics_up          dimension service=router: 1 when the scrape succeeded, 0 when not
#                              (no key in the secret yet, a revoked key, a router that is down)
#
# The secret is created with a placeholder: until an operator key is put into it (see
# docs/deployment.md) every scrape gets 401 and the "metrics missing" alarm says so.
# The collector is not essential: if it dies the router keeps serving, and the alarm fires.

locals {
  collector         = "metrics-collector"
  metrics_namespace = "${var.name}/router"
  metrics_log_group = "/ecs/${var.name}/router-metrics"

  collector_config = {
    receivers = {
      prometheus = {
        config = {
          scrape_configs = [{
            job_name        = "router"
            scrape_interval = "60s"
            scrape_timeout  = "10s"
            metrics_path    = "/metrics"
            # Expanded by the collector from the variable ECS injects from the secret.
            authorization  = { type = "Bearer", credentials = "$${env:ROUTER_METRICS_KEY}" }
            static_configs = [{ targets = ["127.0.0.1:${var.port}"] }]
          }]
        }
      }
    }
    processors = {
      # Everything else (per-model series naming every tenant's models) stays out of CloudWatch.
      "filter/alarms" = {
        metrics = {
          include = {
            match_type   = "regexp"
            metric_names = ["^router_inference_log_rows(_total)?$$", "^up$$"]
          }
        }
      }
      # Fixed names whichever way the receiver spells counters, and a dimension for `up`
      # (EMF drops a metric that has none of its declared dimensions).
      metricstransform = {
        transforms = [
          {
            include    = "^router_inference_log_rows(_total)?$$"
            match_type = "regexp"
            action     = "update"
            new_name   = "router_inference_log_rows"
          },
          {
            include    = "up"
            match_type = "strict"
            action     = "update"
            new_name   = "router_metrics_up"
            operations = [{ action = "add_label", new_label = "service", new_value = "router" }]
          },
        ]
      }
      batch = { timeout = "10s" }
    }
    exporters = {
      awsemf = {
        namespace                        = local.metrics_namespace
        log_group_name                   = local.metrics_log_group
        log_stream_name                  = "{TaskId}"
        region                           = data.aws_region.current.name
        dimension_rollup_option          = "NoDimensionRollup"
        resource_to_telemetry_conversion = { enabled = false }
        metric_declarations = [
          { dimensions = [["event"]], metric_name_selectors = ["^router_inference_log_rows$$"] },
          { dimensions = [["service"]], metric_name_selectors = ["^router_metrics_up$$"] },
        ]
      }
    }
    service = {
      pipelines = {
        metrics = {
          receivers  = ["prometheus"]
          processors = ["filter/alarms", "metricstransform", "batch"]
          exporters  = ["awsemf"]
        }
      }
    }
  }

  collector_container = {
    name              = local.collector
    image             = var.metrics_collector_image
    essential         = false
    cpu               = 64
    memoryReservation = 128
    environment       = [{ name = "AOT_CONFIG_CONTENT", value = yamlencode(local.collector_config) }]
    secrets           = [{ name = "ROUTER_METRICS_KEY", valueFrom = aws_secretsmanager_secret.metrics_key.arn }]
    logConfiguration  = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = local.collector }) }
  }
}

resource "aws_secretsmanager_secret" "metrics_key" {
  name                    = "${var.name}/router/metrics-key"
  description             = "Operator API key the metrics collector sends to the routers' /metrics"
  kms_key_id              = var.database.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "metrics_key" {
  secret_id     = aws_secretsmanager_secret.metrics_key.id
  secret_string = "unset: put an operator key here (docs/deployment.md)"

  lifecycle {
    ignore_changes = [secret_string] # the operator's key, once put, stays
  }
}

resource "aws_cloudwatch_log_group" "metrics" {
  name              = local.metrics_log_group
  retention_in_days = var.metrics_log_retention_days
}

resource "aws_iam_role_policy" "task_metrics" {
  name = "write-router-metrics"
  role = aws_iam_role.task.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      Resource = ["${aws_cloudwatch_log_group.metrics.arn}:*"]
    }]
  })
}
