variable "name" {
  description = "Prefix of resource names, e.g. manyheads-prod."
  type        = string

  validation {
    condition     = length(var.name) <= 23
    error_message = "name must be at most 23 characters (load balancer names are <name>-embedder, 32 at most)."
  }
}

variable "cluster_name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets for the tasks and the internal load balancer."
  type        = list(string)
}

variable "lb_security_group_id" {
  description = "Security group of the internal load balancer (admits routers and training tasks)."
  type        = string
}

variable "task_security_group_id" {
  description = "Security group of the tasks (admits only the load balancer)."
  type        = string
}

variable "image" {
  description = "Full image reference: the embedder-cpu image on Fargate, the embedder-gpu image when use_gpu."
  type        = string
}

variable "use_gpu" {
  description = "Run on the cluster's GPU capacity provider (EC2) instead of Fargate."
  type        = bool
  default     = false
}

variable "gpu_capacity_provider_name" {
  description = "Required when use_gpu."
  type        = string
  default     = null
}

variable "gpus_per_task" {
  type    = number
  default = 1
}

variable "cpu" {
  description = "Task CPU units (1024 = 1 vCPU). On Fargate: a valid Fargate size."
  type        = number
  default     = 2048
}

variable "memory" {
  description = "Task memory in MiB. On a GPU instance leave room for the ECS agent (g4dn.xlarge: at most ~15000)."
  type        = number
  default     = 4096
}

variable "min_count" {
  type    = number
  default = 2
}

variable "max_count" {
  type    = number
  default = 8
}

variable "cpu_target_percent" {
  description = "Average CPU the service scales to hold."
  type        = number
  default     = 60
}

variable "port" {
  type    = number
  default = 50051
}

variable "metrics_port" {
  type    = number
  default = 9464
}

variable "model" {
  description = "EMBEDDER_MODEL: SavedModel folder in the image, or a TF Hub handle."
  type        = string
  default     = "/srv/embedders/minilm-l6-v2"
}

variable "cache_size" {
  description = "EMBEDDER_CACHE_SIZE: phrases kept in the LRU cache per task (0 disables it)."
  type        = number
  default     = 50000
}

variable "max_batch_size" {
  description = "EMBEDDER_MAX_BATCH_SIZE: most texts per model call."
  type        = number
  default     = 64
}

variable "grpc_threads" {
  description = "EMBEDDER_GRPC_THREADS: concurrent RPCs per task."
  type        = number
  default     = 32
}

variable "lanes" {
  description = "EMBEDDER_LANES: model calls at once, each on its own threads; 0: one per visible core."
  type        = number
  default     = 0
}

variable "tf_threads" {
  description = "EMBEDDER_TF_THREADS: TensorFlow threads per lane; 0: the visible cores shared out among the lanes."
  type        = number
  default     = 0
}

variable "shutdown_grace_s" {
  description = "EMBEDDER_SHUTDOWN_GRACE_S: how long in-flight requests may finish after SIGTERM."
  type        = number
  default     = 10

  validation {
    condition     = var.shutdown_grace_s >= 0 && var.shutdown_grace_s <= 100
    error_message = "shutdown_grace_s must fit in ECS's 120 s stop timeout (0 to 100)."
  }
}

variable "extra_environment" {
  description = "More EMBEDDER_* (or LOG_LEVEL) variables; they override the ones above."
  type        = map(string)
  default     = {}
}

variable "deregistration_delay_s" {
  description = "How long a stopping task keeps its existing connections before SIGTERM."
  type        = number
  default     = 30
}

variable "idle_timeout_s" {
  description = "NLB TCP idle timeout (60 to 6000 s): long, so pooled gRPC connections survive quiet periods."
  type        = number
  default     = 1200
}

variable "log_retention_days" {
  type    = number
  default = 30
}
