variable "name" {
  description = "Prefix of resource names, e.g. manyheads-prod."
  type        = string
}

variable "cluster_arn" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets for scheduled runs."
  type        = list(string)
}

variable "security_group_id" {
  type = string
}

variable "image" {
  description = "Full image reference of the training image."
  type        = string
}

variable "cpu" {
  description = "Task CPU units (a valid Fargate size)."
  type        = number
  default     = 4096
}

variable "memory" {
  description = "Task memory in MiB (a valid Fargate size)."
  type        = number
  default     = 16384
}

variable "ephemeral_storage_gib" {
  description = "Task storage for the image, the model store copy and training data (21 to 200)."
  type        = number
  default     = 50
}

variable "config_file" {
  description = "Training configuration, relative to s3://<bucket>/<training_prefix>/ (passed as --config)."
  type        = string
  default     = "heads.yaml"
}

variable "promote" {
  description = "Serve every newly trained version (--promote); false: heads serves a new version only for a model without one."
  type        = bool
  default     = false
}

variable "run_as_uid" {
  description = "UID of the training image's USER: the fetch step hands the task volumes to it."
  type        = number
  default     = 10001
}

variable "database" {
  description = "PostgreSQL connection: host, port, name, sslmode, and the ARN of the training role's secret (keys username and password; the role may only read)."
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
  description = "S3 bucket (name and ARN), prefix of the served heads (models) and of training configs (training)."
  type = object({
    bucket          = string
    bucket_arn      = string
    prefix          = optional(string, "models")
    training_prefix = optional(string, "training")
    kms_key_arn     = optional(string)
  })
}

variable "publish_last" {
  description = "Patterns (aws s3 --exclude syntax, relative to the store) of the serving pointers (<model>/serving.json) and the store's generation file, uploaded only after everything else."
  type        = list(string)
  default     = ["*/serving.json", ".serving-generation"]
}

variable "aws_cli_image" {
  description = "Image of the fetch and publish steps (needs the AWS CLI and /bin/sh)."
  type        = string
  default     = "public.ecr.aws/aws-cli/aws-cli:2.32.9"
}

variable "schedule_expression" {
  description = "EventBridge schedule, e.g. \"cron(0 3 * * ? *)\"; null: run by hand only (aws ecs run-task)."
  type        = string
  default     = null
}

variable "extra_environment" {
  description = "More environment variables for the training container."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  type    = number
  default = 30
}
