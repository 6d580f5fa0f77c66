# One-shot training task: three containers run one after the other on shared task storage.
#
#   fetch   (AWS CLI)   copies s3://<bucket>/models and s3://<bucket>/training into the task
#   train   (training)  python -m heads train --config /srv/training/<file>  (MODEL_STORE=/srv/models)
#   publish (AWS CLI)   uploads the store: new version folders first, serving pointers last
#
# `train` starts only if `fetch` exited 0 and `publish` only if `train` exited 0; otherwise
# ECS stops the task and nothing reaches the bucket. Routers pick the new version up through
# their model-sync sidecars. Publishing never deletes objects, so run one training task at a
# time (or give concurrent jobs disjoint heads).

locals {
  store_path    = "/srv/models"
  training_path = "/srv/training"
  models_uri    = "s3://${var.model_store.bucket}/${var.model_store.prefix}"
  training_uri  = "s3://${var.model_store.bucket}/${var.model_store.training_prefix}"
  cli_flags     = "--only-show-errors --no-progress"
  # Temporary files of interrupted atomic writes never leave the task.
  upload_flags = "${local.cli_flags} --exclude '*.tmp'"
  excludes     = join(" ", [for pattern in var.publish_last : "--exclude '${pattern}'"])

  fetch_script = <<-EOT
    set -eu
    aws s3 sync '${local.models_uri}' '${local.store_path}' ${local.cli_flags}
    aws s3 sync '${local.training_uri}' '${local.training_path}' ${local.cli_flags}
    chown -R ${var.run_as_uid}:${var.run_as_uid} '${local.store_path}' '${local.training_path}'
  EOT

  publish_script = <<-EOT
    set -eu
    aws s3 sync '${local.store_path}' '${local.models_uri}' ${local.upload_flags} ${local.excludes}
    aws s3 sync '${local.store_path}' '${local.models_uri}' ${local.upload_flags}
  EOT

  # heads reads SQL training data from DATABASE_URL. This DSN carries no credentials: libpq
  # fills in host, user, password and sslmode from the PG* variables (password via secrets).
  environment = merge(
    {
      DATABASE_URL = "dbname=${var.database.name}"
      MODEL_STORE  = local.store_path
      PGHOST       = var.database.host
      PGPORT       = tostring(var.database.port)
      PGDATABASE   = var.database.name
      PGSSLMODE    = var.database.sslmode
      PGAPPNAME    = "manyheads-training"
    },
    var.extra_environment,
  )

  log_options = {
    awslogs-group  = aws_cloudwatch_log_group.this.name
    awslogs-region = data.aws_region.current.name
  }

  volumes = [
    { sourceVolume = "models", containerPath = local.store_path, readOnly = false },
    { sourceVolume = "training", containerPath = local.training_path, readOnly = false },
  ]

  containers = [
    {
      name             = "fetch"
      image            = var.aws_cli_image
      essential        = false
      entryPoint       = ["/bin/sh", "-c"]
      command          = [local.fetch_script]
      mountPoints      = local.volumes
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = "fetch" }) }
    },
    {
      name        = "train"
      image       = var.image
      essential   = false
      command     = concat(["train", "--config", "${local.training_path}/${var.config_file}"], var.promote ? ["--promote"] : [])
      environment = [for key in sort(keys(local.environment)) : { name = key, value = local.environment[key] }]
      secrets = [
        { name = "PGUSER", valueFrom = "${var.database.secret_arn}:username::" },
        { name = "PGPASSWORD", valueFrom = "${var.database.secret_arn}:password::" },
      ]
      mountPoints      = local.volumes
      dependsOn        = [{ containerName = "fetch", condition = "SUCCESS" }]
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = "train" }) }
    },
    {
      name             = "publish"
      image            = var.aws_cli_image
      essential        = true # its exit ends the task
      entryPoint       = ["/bin/sh", "-c"]
      command          = [local.publish_script]
      mountPoints      = [for volume in local.volumes : merge(volume, { readOnly = true })]
      dependsOn        = [{ containerName = "train", condition = "SUCCESS" }]
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = "publish" }) }
    },
  ]

  assume_ecs_tasks = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

data "aws_region" "current" {}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}/training"
  retention_in_days = var.log_retention_days
}

# --- IAM ------------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "${var.name}-training-execution"
  assume_role_policy = local.assume_ecs_tasks
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

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

# Read the store and the training configs, write the store. No delete: old versions stay
# (and the bucket is versioned besides).
resource "aws_iam_role" "task" {
  name               = "${var.name}-training-task"
  assume_role_policy = local.assume_ecs_tasks
}

resource "aws_iam_role_policy" "task_model_store" {
  name = "read-write-model-store"
  role = aws_iam_role.task.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Effect   = "Allow"
          Action   = ["s3:ListBucket"]
          Resource = [var.model_store.bucket_arn]
          Condition = { StringLike = { "s3:prefix" = [
            var.model_store.prefix, "${var.model_store.prefix}/*",
            var.model_store.training_prefix, "${var.model_store.training_prefix}/*",
          ] } }
        },
        {
          Effect = "Allow"
          Action = ["s3:GetObject"]
          Resource = [
            "${var.model_store.bucket_arn}/${var.model_store.prefix}/*",
            "${var.model_store.bucket_arn}/${var.model_store.training_prefix}/*",
          ]
        },
        {
          Effect   = "Allow"
          Action   = ["s3:PutObject", "s3:AbortMultipartUpload"]
          Resource = ["${var.model_store.bucket_arn}/${var.model_store.prefix}/*"]
        },
      ],
      var.model_store.kms_key_arn == null ? [] : [{
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = [var.model_store.kms_key_arn]
      }],
    )
  })
}

# --- task definition ---------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-training"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(local.containers)

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  volume {
    name = "models"
  }

  volume {
    name = "training"
  }

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
}

# --- optional schedule -------------------------------------------------------------------

resource "aws_iam_role" "events" {
  count = var.schedule_expression == null ? 0 : 1

  name = "${var.name}-training-schedule"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "events.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "events_run_task" {
  count = var.schedule_expression == null ? 0 : 1

  name = "run-training-task"
  role = aws_iam_role.events[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect    = "Allow"
        Action    = ["ecs:RunTask"]
        Resource  = ["${aws_ecs_task_definition.this.arn_without_revision}:*"]
        Condition = { ArnEquals = { "ecs:cluster" = var.cluster_arn } }
      },
      {
        Effect   = "Allow"
        Action   = ["iam:PassRole"]
        Resource = [aws_iam_role.execution.arn, aws_iam_role.task.arn]
      },
    ]
  })
}

resource "aws_cloudwatch_event_rule" "schedule" {
  count = var.schedule_expression == null ? 0 : 1

  name                = "${var.name}-training"
  description         = "Train classifier heads and publish them to the model store"
  schedule_expression = var.schedule_expression
}

resource "aws_cloudwatch_event_target" "schedule" {
  count = var.schedule_expression == null ? 0 : 1

  rule     = aws_cloudwatch_event_rule.schedule[0].name
  arn      = var.cluster_arn
  role_arn = aws_iam_role.events[0].arn

  ecs_target {
    task_definition_arn = aws_ecs_task_definition.this.arn
    task_count          = 1
    launch_type         = "FARGATE"
    platform_version    = "LATEST"

    network_configuration {
      subnets          = var.subnet_ids
      security_groups  = [var.security_group_id]
      assign_public_ip = false
    }
  }
}
