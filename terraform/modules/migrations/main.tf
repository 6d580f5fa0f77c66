# One-shot task that brings the inference database up to date, as its owner (the master user):
#
#   migrate         (router image)  python -m api migrate: applies inferencedb/migrations, which
#                                   also create the services' login roles and their grants
#   role-passwords  (psql image)    sets each service role's password from that service's secret
#
# role-passwords starts only if migrate exited 0. Run it before the first router starts, after
# every release that brings a migration, and after replacing a service secret (rotation); it is
# idempotent. The passwords reach psql as environment variables injected by ECS and are read
# with \set, so they never appear on a command line or in the task definition.

locals {
  environment = {
    PGHOST     = var.database.host
    PGPORT     = tostring(var.database.port)
    PGDATABASE = var.database.name
    PGSSLMODE  = var.database.sslmode
    PGAPPNAME  = "manyheads-migrations"
  }
  plain_environment = [for key in sort(keys(local.environment)) : { name = key, value = local.environment[key] }]

  owner_secrets = [
    { name = "PGUSER", valueFrom = "${var.database.secret_arn}:username::" },
    { name = "PGPASSWORD", valueFrom = "${var.database.secret_arn}:password::" },
  ]
  password_variables = { for service in sort(keys(var.service_roles)) : service => "${upper(service)}_DB_PASSWORD" }

  role_passwords_script = join("\n", concat(
    ["set -eu", "psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 <<'SQL'"],
    [for service, variable in local.password_variables : "\\set ${service}_password `printenv ${variable}`"],
    [for service, variable in local.password_variables : "ALTER ROLE ${var.service_roles[service]} WITH LOGIN PASSWORD :'${service}_password';"],
    ["SQL", "echo 'role-passwords: set for ${join(", ", [for service in sort(keys(var.service_roles)) : var.service_roles[service]])}'", ""],
  ))

  log_options = {
    awslogs-group  = aws_cloudwatch_log_group.this.name
    awslogs-region = data.aws_region.current.name
  }

  containers = [
    {
      name             = "migrate"
      image            = var.image
      essential        = false
      command          = ["python", "-m", "api", "migrate", "--wait-s", tostring(var.wait_for_database_s)]
      environment      = local.plain_environment
      secrets          = local.owner_secrets
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = "migrate" }) }
    },
    {
      name        = "role-passwords"
      image       = var.psql_image
      essential   = true # its exit ends the task
      entryPoint  = ["/bin/sh", "-c"]
      command     = [local.role_passwords_script]
      environment = local.plain_environment
      secrets = concat(local.owner_secrets, [
        for service, variable in local.password_variables : { name = variable, valueFrom = "${var.service_secret_arns[service]}:password::" }
      ])
      dependsOn        = [{ containerName = "migrate", condition = "SUCCESS" }]
      logConfiguration = { logDriver = "awslogs", options = merge(local.log_options, { awslogs-stream-prefix = "role-passwords" }) }
    },
  ]
}

data "aws_region" "current" {}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}/migrations"
  retention_in_days = var.log_retention_days
}

# --- IAM: the execution role reads the owner's secret and the service secrets; the task itself
# calls no AWS API, so it has no task role.

resource "aws_iam_role" "execution" {
  name = "${var.name}-migrations-execution"
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

resource "aws_iam_role_policy" "execution_secrets" {
  name = "read-database-secrets"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = concat([var.database.secret_arn], [for service in sort(keys(var.service_secret_arns)) : var.service_secret_arns[service]])
      }],
      var.database.kms_key_arn == null ? [] : [{
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.database.kms_key_arn]
      }],
    )
  })
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-migrations"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  execution_role_arn       = aws_iam_role.execution.arn
  container_definitions    = jsonencode(local.containers)

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  lifecycle {
    precondition {
      condition     = toset(keys(var.service_secret_arns)) == toset(keys(var.service_roles))
      error_message = "service_secret_arns needs one secret per service of service_roles."
    }
  }
}
