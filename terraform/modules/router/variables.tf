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
  description = "PostgreSQL connection: host, port, name, sslmode, and the ARN of the RDS-managed secret (keys username and password)."
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
  description = "ACM certificate for an HTTPS listener; when set, HTTP redirects to HTTPS. null serves plain HTTP."
  type        = string
  default     = null
}

variable "ssl_policy" {
  type    = string
  default = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "health_check_path" {
  description = "Load balancer health check: ready means the embedder is reachable and heads are loaded."
  type        = string
  default     = "/readyz"
}

variable "deletion_protection" {
  type    = bool
  default = false
}

variable "extra_environment" {
  description = "More environment variables for the router container; they override the defaults."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  type    = number
  default = 30
}
