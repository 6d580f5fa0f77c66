variable "name" {
  description = "Prefix of resource names, e.g. manyheads-prod."
  type        = string
}

variable "image" {
  description = "Full image reference of the router image (it runs `python -m api migrate`)."
  type        = string
}

variable "psql_image" {
  description = "Image with psql and /bin/sh that sets the service roles' passwords."
  type        = string
  default     = "public.ecr.aws/docker/library/postgres:17-alpine"
}

variable "database" {
  description = "PostgreSQL connection: host, port, name, sslmode, and the ARN of the owner's (master user's) secret."
  type = object({
    host        = string
    port        = number
    name        = string
    sslmode     = optional(string, "require")
    secret_arn  = string
    kms_key_arn = optional(string)
  })
}

variable "service_roles" {
  description = "Login role per service, as created by the migrations (e.g. router = \"manyheads_router\")."
  type        = map(string)

  validation {
    condition     = alltrue([for role in values(var.service_roles) : can(regex("^[a-z_][a-z0-9_]{0,62}$", role))])
    error_message = "Role names are lower-case PostgreSQL identifiers (letters, digits, underscores)."
  }

  validation {
    condition     = alltrue([for service in keys(var.service_roles) : can(regex("^[a-z][a-z0-9_]*$", service))])
    error_message = "Service names are lower-case letters, digits and underscores (they name environment variables)."
  }
}

variable "service_secret_arns" {
  description = "Secret (JSON keys username and password) per service, the same keys as service_roles."
  type        = map(string)
}

variable "wait_for_database_s" {
  description = "How long `migrate` waits for PostgreSQL to accept connections (a fresh instance, a failover)."
  type        = number
  default     = 300
}

variable "log_retention_days" {
  type    = number
  default = 30
}
