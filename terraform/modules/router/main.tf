# HTTP routers: gunicorn serving api.web.app behind an internet-facing ALB, with a model-sync
# sidecar in every task.
#
# Model store in the task: the sidecar mirrors s3://<bucket>/<prefix> into a task volume
# every model_sync_interval_s seconds (`aws s3 sync --delete`); the router container mounts
# the same volume read-only as MODEL_STORE=/srv/models. The router reloads heads when the
# registry files change and ignores partial artifacts, so the order in which files arrive
# does not matter. The router starts only after the first sync succeeded (sidecar HEALTHY).
#
# Database credentials: ECS reads the RDS-managed secret at task start and injects its
# username/password keys as PGUSER/PGPASSWORD; libpq (psycopg2) picks up PGHOST, PGPORT,
# PGDATABASE and PGSSLMODE from the environment, so no DSN with a password exists anywhere.

locals {
  router       = "router"
  sidecar      = "model-sync"
  models_path  = "/srv/models"
  sync_marker  = "/tmp/model-sync.ok"
  https        = var.certificate_arn != null
  model_s3_uri = "s3://${var.model_store.bucket}/${var.model_store.prefix}"

  environment = merge(
    {
      API_PORT         = tostring(var.port)
      API_WORKERS      = tostring(var.workers)
      API_THREADS      = tostring(var.threads)
      EMBEDDER_ADDRESS = var.embedder_address
      MODEL_STORE      = local.models_path
      PGHOST           = var.database.host
      PGPORT           = tostring(var.database.port)
      PGDATABASE       = var.database.name
      PGSSLMODE        = var.database.sslmode
      PGAPPNAME        = "manyheads-router"
    },
    var.extra_environment,
  )

  # sh is PID 1 in the sidecar: trap SIGTERM, and sleep in the background so the trap runs at once.
  sync_script = <<-EOT
    trap 'exit 0' TERM INT
    while true; do
      if aws s3 sync '${local.model_s3_uri}' '${local.models_path}' --delete --exact-timestamps --only-show-errors --no-progress; then
        touch '${local.sync_marker}'
      else
        echo 'model-sync: sync failed, routers keep the previous copy' >&2
      fi
      sleep ${var.model_sync_interval_s} &
      wait $!
    done
  EOT

  log_options = {
    awslogs-group  = aws_cloudwatch_log_group.this.name
    awslogs-region = data.aws_region.current.name
  }

  containers = [
    {
      name      = local.router
      image     = var.image
      essential = true
      portMappings = [
        { name = "http", containerPort = var.port, protocol = "tcp" },
      ]
      environment = [for key in sort(keys(local.environment)) : { name = key, value = local.environment[key] }]
      secrets = [
        { name = "PGUSER", valueFrom = "${var.database.secret_arn}:username::" },
        { name = "PGPASSWORD", valueFrom = "${var.database.secret_arn}:password::" },
      ]
      mountPoints = [
        { sourceVolume = "models", containerPath = local.models_path, readOnly = true },
      ]
      dependsOn = [
        { containerName = local.sidecar, condition = "HEALTHY" },
      ]
      healthCheck = {
        # Liveness only (/healthz); readiness (/readyz) is the load balancer's business.
        command = [
          "CMD", "python", "-c",
          "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.port}/healthz', timeout=4)",
        ]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      stopTimeout      = 35
      ulimits          = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = local.router }) }
    },
    {
      name              = local.sidecar
      image             = var.model_sync_image
      essential         = true # a dead sidecar would silently freeze the heads: replace the task instead
      cpu               = 128
      memoryReservation = 128
      entryPoint        = ["/bin/sh", "-c"]
      command           = [local.sync_script]
      mountPoints = [
        { sourceVolume = "models", containerPath = local.models_path, readOnly = false },
      ]
      healthCheck = {
        command     = ["CMD-SHELL", "test -f ${local.sync_marker}"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 120
      }
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = local.sidecar }) }
    },
  ]
}

data "aws_region" "current" {}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}/router"
  retention_in_days = var.log_retention_days
}

# --- IAM ------------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name = "${var.name}-router-execution"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# The execution role (used by ECS to start the task, not by the code) may read exactly one
# secret: the database credentials.
resource "aws_iam_role_policy" "execution_secret" {
  name = "read-database-secret"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [var.database.secret_arn]
      }],
      var.database.kms_key_arn == null ? [] : [{
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.database.kms_key_arn]
      }],
    )
  })
}

# The task role (used by the sidecar's AWS CLI): read-only on the model prefix.
resource "aws_iam_role" "task" {
  name = "${var.name}-router-task"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "task_model_store" {
  name = "read-model-store"
  role = aws_iam_role.task.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Effect    = "Allow"
          Action    = ["s3:ListBucket"]
          Resource  = [var.model_store.bucket_arn]
          Condition = { StringLike = { "s3:prefix" = ["${var.model_store.prefix}/*", var.model_store.prefix] } }
        },
        {
          Effect   = "Allow"
          Action   = ["s3:GetObject"]
          Resource = ["${var.model_store.bucket_arn}/${var.model_store.prefix}/*"]
        },
      ],
      var.model_store.kms_key_arn == null ? [] : [{
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.model_store.kms_key_arn]
      }],
    )
  })
}

# --- task and service -------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-router"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(local.containers)

  # Fargate task storage shared by the two containers.
  volume {
    name = "models"
  }

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
}

resource "aws_ecs_service" "this" {
  name            = "router"
  cluster         = var.cluster_name
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = var.min_count
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [var.task_security_group_id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = local.router
    container_port   = var.port
  }

  health_check_grace_period_seconds  = 120
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count] # autoscaling owns it
  }

  depends_on = [aws_lb_listener.http, aws_lb_listener.https]
}

# --- autoscaling: CPU and requests per task ------------------------------------------------

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-router-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  name               = "${var.name}-router-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.requests_per_target
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.this.arn_suffix}/${aws_lb_target_group.this.arn_suffix}"
    }
  }
}
