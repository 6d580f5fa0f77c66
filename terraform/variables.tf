# --- identity and placement --------------------------------------------------------------

variable "project" {
  description = "Project name: the first part of every resource name."
  type        = string
  default     = "manyheads"
}

variable "environment" {
  description = "Environment name (prod, staging, ...): the second part of every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.environment))
    error_message = "environment must be lower-case letters, digits and dashes."
  }
}

variable "region" {
  type = string
}

variable "availability_zones" {
  description = "Two or more zones of the region."
  type        = list(string)
}

variable "vpc_cidr" {
  type    = string
  default = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway (cheaper) instead of one per zone (tolerates a zone outage)."
  type        = bool
  default     = true
}

variable "alb_ingress_cidrs" {
  description = "Who may reach the public API."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

# --- images ------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of the images to run (e.g. the git commit), pushed to the ECR repositories of this stack."
  type        = string
}

variable "image_tag_overrides" {
  description = "Per-role tag that replaces image_tag: keys embedder-cpu, embedder-gpu, router, training."
  type        = map(string)
  default     = {}
}

variable "ecr_keep_images" {
  description = "Images kept per ECR repository."
  type        = number
  default     = 30
}

# --- ECS cluster and GPU capacity ----------------------------------------------------------

variable "container_insights" {
  type    = bool
  default = true
}

variable "embedder_use_gpu" {
  description = "Run the embedder on GPU EC2 instances (embedder-gpu image) instead of Fargate (embedder-cpu image)."
  type        = bool
  default     = false
}

variable "gpu_instance_type" {
  type    = string
  default = "g4dn.xlarge"
}

variable "gpu_max_instances" {
  type    = number
  default = 4
}

# --- embedder ------------------------------------------------------------------------------

variable "embedder_cpu" {
  description = "Task CPU units; on Fargate a valid Fargate size."
  type        = number
  default     = 2048
}

variable "embedder_memory" {
  description = "Task memory (MiB)."
  type        = number
  default     = 4096
}

variable "embedder_min_count" {
  type    = number
  default = 2
}

variable "embedder_max_count" {
  type    = number
  default = 8
}

variable "embedder_cpu_target_percent" {
  type    = number
  default = 60
}

variable "embedder_model" {
  description = "EMBEDDER_MODEL: folder in the image (built at image build time) or a TF Hub handle."
  type        = string
  default     = "/srv/embedders/minilm-l6-v2"
}

variable "embedder_cache_size" {
  description = "EMBEDDER_CACHE_SIZE per task."
  type        = number
  default     = 50000
}

variable "embedder_max_batch_size" {
  description = "EMBEDDER_MAX_BATCH_SIZE."
  type        = number
  default     = 64
}

variable "embedder_grpc_threads" {
  description = "EMBEDDER_GRPC_THREADS."
  type        = number
  default     = 32
}

variable "embedder_lanes" {
  description = "EMBEDDER_LANES: model calls at once (0: one per visible core; set it to the task's vCPUs on EC2, where a task sees every core of the instance)."
  type        = number
  default     = 0
}

variable "embedder_tf_threads" {
  description = "EMBEDDER_TF_THREADS: threads per lane (0: the visible cores shared out among the lanes; on EC2 set embedder_lanes and leave this 0 or 1)."
  type        = number
  default     = 0
}

variable "embedder_extra_environment" {
  description = "Other EMBEDDER_* settings (see `python -m embedder settings`)."
  type        = map(string)
  default     = {}
}

# --- router ---------------------------------------------------------------------------------

variable "router_cpu" {
  type    = number
  default = 1024
}

variable "router_memory" {
  type    = number
  default = 2048
}

variable "router_min_count" {
  type    = number
  default = 2
}

variable "router_max_count" {
  type    = number
  default = 10
}

variable "router_workers" {
  description = "API_WORKERS per task."
  type        = number
  default     = 2
}

variable "router_threads" {
  description = "API_THREADS per worker."
  type        = number
  default     = 8
}

variable "router_cpu_target_percent" {
  type    = number
  default = 60
}

variable "router_requests_per_target" {
  description = "Requests per task per minute the router service scales to hold."
  type        = number
  default     = 3000
}

variable "router_extra_environment" {
  type    = map(string)
  default = {}
}

variable "certificate_arn" {
  description = "ACM certificate of the public load balancer's HTTPS listener (TLS 1.2+; HTTP redirects to it). Required unless allow_plain_http."
  type        = string
  default     = null
}

variable "allow_plain_http" {
  description = "Serve the API over plain HTTP when certificate_arn is null (API keys in clear text): throwaway test stacks only."
  type        = bool
  default     = false
}

variable "model_sync_interval_s" {
  description = "Seconds between two syncs of the model store into each router task."
  type        = number
  default     = 30
}

variable "aws_cli_image" {
  description = "AWS CLI image of the model-sync sidecar and the training fetch/publish steps."
  type        = string
  default     = "public.ecr.aws/aws-cli/aws-cli:2.32.9"
}

variable "psql_image" {
  description = "Image with psql of the migrations task's role-passwords step."
  type        = string
  default     = "public.ecr.aws/docker/library/postgres:17-alpine"
}

# --- training -------------------------------------------------------------------------------

variable "training_cpu" {
  type    = number
  default = 4096
}

variable "training_memory" {
  type    = number
  default = 16384
}

variable "training_config_file" {
  description = "Config under s3://<bucket>/training/ passed to `python -m heads train --config`."
  type        = string
  default     = "heads.yaml"
}

variable "training_promote" {
  description = "Serve every newly trained version at once; false: promote by hand (python -m heads promote)."
  type        = bool
  default     = false
}

variable "training_schedule_expression" {
  description = "EventBridge schedule of the training task (e.g. \"cron(0 3 * * ? *)\"); null: manual runs only."
  type        = string
  default     = null
}

variable "model_store_publish_last" {
  description = "Patterns of the serving pointers (<model>/serving.json) that training uploads after everything else."
  type        = list(string)
  default     = ["*/serving.json"]
}

# --- storage --------------------------------------------------------------------------------

variable "model_store_bucket_name" {
  description = "Bucket of the model store; null: <project>-<environment>-models-<account id>."
  type        = string
  default     = null
}

variable "model_store_force_destroy" {
  type    = bool
  default = false
}

variable "db_engine_version" {
  description = "PostgreSQL 16 or newer (a major alone tracks the newest minor)."
  type        = string
  default     = "16"
}

variable "db_instance_class" {
  type    = string
  default = "db.t4g.medium"
}

variable "db_allocated_storage_gb" {
  type    = number
  default = 50
}

variable "db_max_allocated_storage_gb" {
  type    = number
  default = 500
}

variable "db_multi_az" {
  type    = bool
  default = false
}

variable "db_backup_retention_days" {
  type    = number
  default = 7
}

variable "db_deletion_protection" {
  type    = bool
  default = true
}

variable "db_skip_final_snapshot" {
  type    = bool
  default = false
}

# --- logs and alarms ---------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of every service's CloudWatch log group."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "create_alarm_topic" {
  type    = bool
  default = false
}

variable "alarm_emails" {
  type    = list(string)
  default = []
}

variable "existing_alarm_topic_arn" {
  type    = string
  default = null
}

variable "router_p99_alarm_seconds" {
  type    = number
  default = 1.5
}

variable "router_5xx_alarm_percent" {
  type    = number
  default = 2
}
