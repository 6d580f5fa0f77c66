variable "name" {
  description = "Prefix of resource names, e.g. manyheads-prod."
  type        = string

  validation {
    condition     = length(var.name) <= 25
    error_message = "name must be at most 25 characters (load balancer names are <name>-router, 32 at most)."
  }
}

variable "cluster_name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the router tasks."
  type        = list(string)
}

variable "alb_security_group_id" {
  type = string
}

variable "task_security_group_id" {
  type = string
}

variable "image" {
  description = "Full image reference of the router image."
  type        = string
}

variable "cpu" {
  description = "Task CPU units (a valid Fargate size; includes the model-sync sidecar)."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Task memory in MiB (a valid Fargate size)."
  type        = number
  default     = 2048
}

variable "min_count" {
  type    = number
  default = 2
}

variable "max_count" {
  type    = number
  default = 10
}

variable "cpu_target_percent" {
  type    = number
  default = 60
}

variable "requests_per_target" {
  description = "ALBRequestCountPerTarget target: requests per task per minute the service scales to hold."
  type        = number
  default     = 3000
}

variable "port" {
  description = "API_PORT."
  type        = number
  default     = 8000
}

variable "workers" {
  description = "API_WORKERS: gunicorn worker processes per task (about one per vCPU)."
  type        = number
  default     = 2
}

variable "threads" {
  description = "API_THREADS: threads per worker (requests mostly wait on the embedder and PostgreSQL)."
  type        = number
  default     = 8
}

variable "embedder_address" {
  description = "EMBEDDER_ADDRESS: host:port of the embedder's internal load balancer."
  type        = string
}

variable "database" {
  description = "PostgreSQL connection: host, port, name, sslmode, and the ARN of the router role's secret (keys username and password); kms_key_arn when the secrets use a customer-managed key."
  type = object({
    host        = string
    port        = number
    name        = string
    sslmode     = optional(string, "require")
    secret_arn  = string
    kms_key_arn = optional(string)
  })
}

variable "model_store" {
  description = "S3 bucket (name and ARN) and key prefix of the trained heads; kms_key_arn when the bucket uses a customer-managed key."
  type = object({
    bucket      = string
    bucket_arn  = string
    prefix      = optional(string, "models")
    kms_key_arn = optional(string)
  })
}

variable "model_sync_image" {
  description = "Image of the sidecar that mirrors the model store (needs the AWS CLI and /bin/sh)."
  type        = string
  default     = "public.ecr.aws/aws-cli/aws-cli:2.32.9"
}

variable "model_sync_interval_s" {
  description = "Seconds between two syncs of the model store into the task."
  type        = number
  default     = 30
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener (HTTP redirects to it). Required unless allow_plain_http."
  type        = string
  default     = null
}

variable "allow_plain_http" {
  description = "Without a certificate, serve the API over plain HTTP (API keys in clear text): test stacks only."
  type        = bool
  default     = false
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener: TLS 1.2 or newer only."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  validation {
    condition     = can(regex("^ELBSecurityPolicy-(TLS13-1-[23]|TLS-1-2|FS-1-2)-", var.ssl_policy))
    error_message = "ssl_policy must allow TLS 1.2 or newer only (e.g. ELBSecurityPolicy-TLS13-1-2-2021-06)."
  }
}

variable "health_check_path" {
  description = "Load balancer health check: 200 while the router can answer (heads loaded; /readyz reports a degraded embedder without failing)."
  type        = string
  default     = "/readyz"
}

variable "deletion_protection" {
  type    = bool
  default = false
}

variable "extra_environment" {
  description = "More environment variables for the router container; they override the defaults, except those tied to the task (API_HOST, API_PORT, API_SPOOL_DIR, API_MIGRATE_ON_START, MODEL_STORE)."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(setintersection(keys(var.extra_environment), ["API_HOST", "API_PORT", "API_SPOOL_DIR", "API_MIGRATE_ON_START", "MODEL_STORE"])) == 0
    error_message = "API_HOST, API_PORT, API_SPOOL_DIR, API_MIGRATE_ON_START and MODEL_STORE follow from the task (port, mounts, database role): set port instead, or leave them."
  }
}

variable "spool_security_group_id" {
  description = "Security group of the spool's EFS mount targets (admits NFS from the router tasks)."
  type        = string
}

variable "spool_kms_key_arn" {
  description = "Customer-managed KMS key of the spool file system; null uses aws/elasticfilesystem (still encrypted)."
  type        = string
  default     = null
}

variable "run_as_uid" {
  description = "UID (and GID) of the router image's USER: owner of every spool file, enforced by the EFS access point."
  type        = number
  default     = 10001
}

variable "metrics_collector_image" {
  description = "AWS Distro for OpenTelemetry collector image of the metrics sidecar (reads its configuration from AOT_CONFIG_CONTENT)."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.45.1"
}

variable "metrics_log_retention_days" {
  description = "Retention of the collector's EMF log group (the metrics themselves stay in CloudWatch for 15 months)."
  type        = number
  default     = 7
}

variable "log_retention_days" {
  type    = number
  default = 30
}
