# PostgreSQL for the inference log. RDS generates the master password and keeps it in a
# Secrets Manager secret it manages (manage_master_user_password): the password never
# appears in variables, plans or state, only the secret's ARN does. The master user owns the
# schema and runs the migrations; the services log in with roles of their own (below).

locals {
  major = split(".", var.engine_version)[0]
}

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-pg${local.major}-"
  family      = "postgres${local.major}"
  description = "manyheads inference database"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = tostring(var.log_min_duration_statement_ms)
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  db_name                       = var.database_name
  username                      = var.master_username
  manage_master_user_password   = true
  master_user_secret_kms_key_id = var.master_user_secret_kms_key_arn

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [var.security_group_id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.multi_az

  backup_retention_period   = var.backup_retention_days
  backup_window             = var.backup_window
  maintenance_window        = var.maintenance_window
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = var.skip_final_snapshot
  final_snapshot_identifier = var.skip_final_snapshot ? null : "${var.name}-final"

  auto_minor_version_upgrade            = true
  performance_insights_enabled          = var.performance_insights_enabled
  performance_insights_retention_period = var.performance_insights_enabled ? 7 : null
  enabled_cloudwatch_logs_exports       = ["postgresql"]
  apply_immediately                     = var.apply_immediately

  depends_on = [aws_cloudwatch_log_group.postgresql]
}

# Created here (before the instance exports to it) so that its retention is managed.
resource "aws_cloudwatch_log_group" "postgresql" {
  name              = "/aws/rds/instance/${var.name}/postgresql"
  retention_in_days = var.log_retention_days
}

# --- one login role per service ---------------------------------------------------------
#
# Routers and training do not connect as the master user. Each service has its own role,
# created with its grants by a migration (inferencedb/migrations, run as the owner by the
# migrations task), and its own secret here (JSON keys username and password). The password is
# generated once by Secrets Manager; the migrations task sets it on the role (ALTER ROLE ...
# PASSWORD) from this secret. Terraform keeps the generated value in its state (sensitive), so
# the state must stay private and encrypted; to rotate, replace the secret version
# (terraform apply -replace=...), run the migrations task, then redeploy the service.

data "aws_secretsmanager_random_password" "service" {
  for_each = var.service_roles

  password_length     = 40
  exclude_punctuation = true # no quoting trouble in libpq, psql or URLs
}

resource "aws_secretsmanager_secret" "service" {
  for_each = var.service_roles

  name                    = "${var.name}/database/${each.key}"
  description             = "PostgreSQL login of the ${each.key} (role ${each.value}) on ${var.name}"
  kms_key_id              = var.master_user_secret_kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "service" {
  for_each = var.service_roles

  secret_id = aws_secretsmanager_secret.service[each.key].id
  secret_string = jsonencode({
    username = each.value
    password = data.aws_secretsmanager_random_password.service[each.key].random_password
  })

  lifecycle {
    ignore_changes = [secret_string] # generated once: a fresh random value every plan must not rotate it
  }
}
