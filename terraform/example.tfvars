# A production-like environment in eu-west-1. Copy, adjust, and run
#   terraform plan -var-file=example.tfvars
# (see docs/deployment.md for the first apply, which creates ECR before images exist).

environment        = "prod"
region             = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
vpc_cidr           = "10.40.0.0/16"
single_nat_gateway = false

# Images: push all four roles with this tag before the services are created.
image_tag = "2026.11.22-cb5a6d0"

# Embedder: 2 vCPU / 4 GiB Fargate tasks (CPU image). For GPUs set embedder_use_gpu = true,
# embedder_cpu = 3072, embedder_memory = 12288, embedder_lanes = 1 (the GPU runs one call at a time),
# embedder_tf_threads = 4.
embedder_use_gpu            = false
embedder_cpu                = 2048
embedder_memory             = 4096
embedder_min_count          = 2
embedder_max_count          = 8
embedder_cpu_target_percent = 60
embedder_model              = "/srv/embedders/minilm-l6-v2"
embedder_cache_size         = 100000
embedder_max_batch_size     = 64
embedder_grpc_threads       = 32
gpu_instance_type           = "g4dn.xlarge"
gpu_max_instances           = 4

# Routers: 1 vCPU / 2 GiB, 2 workers x 8 threads each.
router_cpu                 = 1024
router_memory              = 2048
router_min_count           = 2
router_max_count           = 12
router_workers             = 2
router_threads             = 8
router_requests_per_target = 3000
model_sync_interval_s      = 30
# HTTPS only (TLS 1.2+, port 80 redirects). Without a certificate the plan fails, unless
# allow_plain_http = true, which is meant for throwaway test stacks.
certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"

# Training: every night at 03:00 UTC from s3://<bucket>/training/heads.yaml.
training_cpu                 = 4096
training_memory              = 16384
training_config_file         = "heads.yaml"
training_promote             = true
training_schedule_expression = "cron(0 3 * * ? *)"

# Inference database.
db_engine_version           = "16"
db_instance_class           = "db.m7g.large"
db_allocated_storage_gb     = 100
db_max_allocated_storage_gb = 1000
db_multi_az                 = true
db_backup_retention_days    = 14
db_deletion_protection      = true

log_retention_days       = 90
create_alarm_topic       = true
alarm_emails             = ["oncall@example.com"]
router_p99_alarm_seconds = 1.5
router_5xx_alarm_percent = 2

tags = {
  CostCenter = "nlp-platform"
}
