variable "name" {
  description = "Instance identifier and name prefix, e.g. manyheads-prod."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (two or more zones) for the DB subnet group."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group that admits only routers and training tasks."
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL version: a major (\"16\") lets RDS pick the current minor; auto minor upgrades stay on."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?$", var.engine_version)) && tonumber(split(".", var.engine_version)[0]) >= 16
    error_message = "engine_version must be PostgreSQL 16 or newer, e.g. \"16\" or \"17.5\"."
  }
}

variable "instance_class" {
  type    = string
  default = "db.t4g.medium"
}

variable "allocated_storage_gb" {
  type    = number
  default = 50
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling; prediction logs grow without bound unless pruned."
  type        = number
  default     = 500
}

variable "database_name" {
  type    = string
  default = "manyheads"
}

variable "master_username" {
  description = "Master user name; its password is generated and kept by RDS in Secrets Manager."
  type        = string
  default     = "manyheads"
}

variable "service_roles" {
  description = "Login role of each service (router, training), as created by the inference database's migrations; one secret each."
  type        = map(string)
  default = {
    router   = "manyheads_router"
    training = "manyheads_training"
  }

  validation {
    condition     = alltrue([for role in values(var.service_roles) : can(regex("^[a-z_][a-z0-9_]{0,62}$", role))])
    error_message = "Role names are lower-case PostgreSQL identifiers (letters, digits, underscores)."
  }
}

variable "multi_az" {
  type    = bool
  default = false
}

variable "backup_retention_days" {
  type    = number
  default = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "Keep automated backups (1 to 35 days)."
  }
}

variable "backup_window" {
  description = "Daily UTC window for automated backups."
  type        = string
  default     = "03:00-04:00"
}

variable "maintenance_window" {
  type    = string
  default = "sun:04:30-sun:05:30"
}

variable "deletion_protection" {
  type    = bool
  default = true
}

variable "skip_final_snapshot" {
  description = "Only for throwaway environments: destroy without a final snapshot."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for storage; null uses the AWS-managed RDS key (still encrypted)."
  type        = string
  default     = null
}

variable "master_user_secret_kms_key_arn" {
  description = "Customer-managed KMS key for the master user secret and the service secrets; null uses aws/secretsmanager."
  type        = string
  default     = null
}

variable "log_min_duration_statement_ms" {
  description = "Log statements slower than this (-1 turns it off)."
  type        = number
  default     = 500
}

variable "performance_insights_enabled" {
  description = "Performance Insights (not available on the smallest instance classes)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of the exported PostgreSQL log in CloudWatch Logs."
  type        = number
  default     = 30
}

variable "apply_immediately" {
  type    = bool
  default = false
}
