# HTTP routers: gunicorn serving api.web.app behind an internet-facing ALB, with a model-sync
# sidecar and a metrics collector in every task.
#
# Model store in the task: the sidecar mirrors s3://<bucket>/<prefix> into a task volume
# every model_sync_interval_s seconds (`aws s3 sync --delete`); the router container mounts
# the same volume read-only as MODEL_STORE=/srv/models. The router reloads heads when the
# registry files change and ignores partial artifacts, so the order in which files arrive
# does not matter. The router starts only after the first sync succeeded (sidecar HEALTHY).
#
# Spool: the inference log's journal and spool files and the API-key snapshot live on EFS
# (spool.tf), one folder shared by every router task, so rows a task leaves behind are replayed
# by the others or by its replacement.
#
# Database credentials: ECS reads the router's own secret (role manyheads_router, not the
# master user) at task start and injects its username/password keys as PGUSER/PGPASSWORD;
# libpq (psycopg2) picks up PGHOST, PGPORT, PGDATABASE and PGSSLMODE from the environment, so
# no DSN with a password exists anywhere.

locals {
  router       = "router"
  sidecar      = "model-sync"
  models_path  = "/srv/models"
  spool_path   = "/srv/spool"
  sync_marker  = "/tmp/model-sync.ok"
  https        = var.certificate_arn != null
  model_s3_uri = "s3://${var.model_store.bucket}/${var.model_store.prefix}"

  # Tied to this task's ports, mounts and database role: extra_environment may not change them.
  fixed_environment = {
    API_HOST = "0.0.0.0" # the router binds 127.0.0.1 by default, which the load balancer cannot reach
    API_PORT = tostring(var.port)
    # Journal, spool and API-key snapshot on EFS: they outlive the task (spool.tf).
    API_SPOOL_DIR = local.spool_path
    # The router role cannot change the schema: migrations run in the migrations task, as the owner.
    API_MIGRATE_ON_START = "false"
    MODEL_STORE          = local.models_path
  }

  environment = merge(
    {
      API_WORKERS      = tostring(var.workers)
      API_THREADS      = tostring(var.threads)
      EMBEDDER_ADDRESS = var.embedder_address
      PGHOST           = var.database.host
      PGPORT           = tostring(var.database.port)
      PGDATABASE       = var.database.name
      PGSSLMODE        = var.database.sslmode
      PGAPPNAME        = "manyheads-router"
    },
    var.extra_environment,
    local.fixed_environment,
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
        { sourceVolume = "spool", containerPath = local.spool_path, readOnly = false },
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
    local.collector_container, # metrics.tf
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

# The execution role (used by ECS to start the task, not by the code) may read exactly two
# secrets: the router's database credentials and the collector's metrics key.
resource "aws_iam_role_policy" "execution_secret" {
  name = "read-task-secrets"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [var.database.secret_arn, aws_secretsmanager_secret.metrics_key.arn]
      }],
      var.database.kms_key_arn == null ? [] : [{
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.database.kms_key_arn]
      }],
    )
  })
}

# The task role: read-only on the model prefix (the model-sync sidecar's AWS CLI), mounting the
# spool through its access point (spool.tf), writing the collector's metric log (metrics.tf).
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

  # Fargate task storage shared by the router and the model-sync sidecar.
  volume {
    name = "models"
  }

  # The EFS spool, through its access point (uid 10001, the router image's user), over TLS and
  # with the task role's IAM identity (the file system policy admits no one else).
  volume {
    name = "spool"

    efs_volume_configuration {
      file_system_id     = aws_efs_file_system.spool.id
      transit_encryption = "ENABLED"

      authorization_config {
        access_point_id = aws_efs_access_point.spool.id
        iam             = "ENABLED"
      }
    }
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

  # Tasks mount the spool at start: every zone's mount target must exist first.
  depends_on = [aws_lb_listener.http, aws_lb_listener.https, aws_efs_mount_target.spool]
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
