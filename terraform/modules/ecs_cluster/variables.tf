variable "name" {
  description = "Cluster name, e.g. manyheads-prod."
  type        = string
}

variable "container_insights" {
  description = "Per-task CPU/memory/network metrics in CloudWatch (billed as custom metrics)."
  type        = bool
  default     = true
}

variable "enable_gpu" {
  description = "Create an EC2 capacity provider of GPU instances (for the embedder)."
  type        = bool
  default     = false
}

variable "gpu_instance_type" {
  description = "One NVIDIA GPU per instance is enough for one embedder task (g4dn.xlarge: T4, 4 vCPU, 16 GiB)."
  type        = string
  default     = "g4dn.xlarge"
}

variable "gpu_min_instances" {
  type    = number
  default = 0
}

variable "gpu_max_instances" {
  type    = number
  default = 4
}

variable "gpu_target_capacity_percent" {
  description = "Managed scaling target: 100 packs instances full; lower keeps spare instances for fast scale-out."
  type        = number
  default     = 100
}

variable "gpu_subnet_ids" {
  description = "Private subnets for the GPU instances."
  type        = list(string)
  default     = []
}

variable "gpu_security_group_id" {
  description = "Security group of the GPU container instances (tasks have their own ENIs and groups)."
  type        = string
  default     = null
}

variable "gpu_ami_ssm_parameter" {
  description = "SSM parameter holding the ECS GPU-optimized AMI (Amazon Linux 2023, NVIDIA driver + container toolkit)."
  type        = string
  default     = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
}

variable "gpu_root_volume_gb" {
  description = "Root volume of GPU instances; the CUDA-enabled embedder image is several GiB."
  type        = number
  default     = 100
}
