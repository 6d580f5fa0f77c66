variable "name" {
  description = "Prefix of alarm and topic names, e.g. manyheads-prod."
  type        = string
}

variable "create_topic" {
  description = "Create an SNS topic for the alarms (subscribe alarm_emails to it)."
  type        = bool
  default     = false
}

variable "alarm_emails" {
  description = "Addresses subscribed to the created topic (each must confirm by mail)."
  type        = list(string)
  default     = []
}

variable "existing_topic_arn" {
  description = "Send alarms to this SNS topic as well (e.g. a shared on-call topic)."
  type        = string
  default     = null
}

variable "router" {
  description = "ARN suffixes of the router ALB and target group; CloudWatch namespace of the routers' own metrics."
  type = object({
    alb_arn_suffix          = string
    target_group_arn_suffix = string
    metrics_namespace       = string
  })
}

variable "embedder" {
  description = "ARN suffixes of the embedder NLB and target group."
  type = object({
    load_balancer_arn_suffix = string
    target_group_arn_suffix  = string
  })
}

variable "db_instance_identifier" {
  type = string
}

variable "router_5xx_percent" {
  description = "Alarm when more than this share of requests answer 5xx (router or ALB) over 5 minutes."
  type        = number
  default     = 2
}

variable "router_p99_seconds" {
  description = "Alarm when the p99 target response time exceeds this for 3 of 5 minutes."
  type        = number
  default     = 1.5
}

variable "spooled_rows_minutes" {
  description = "Alarm when rows are spooled in each of this many consecutive minutes (a failover of a minute or two passes unnoticed)."
  type        = number
  default     = 3
}

variable "db_cpu_percent" {
  type    = number
  default = 80
}

variable "db_free_storage_gb" {
  type    = number
  default = 10
}
