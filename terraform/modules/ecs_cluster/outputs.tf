output "cluster_arn" {
  value = aws_ecs_cluster.this.arn
}

output "cluster_name" {
  description = "Cluster name, available once its capacity providers are attached (services must wait for that)."
  value       = aws_ecs_cluster_capacity_providers.this.cluster_name
}

output "gpu_capacity_provider_name" {
  description = "Name of the GPU capacity provider, or null when enable_gpu is false."
  value       = var.enable_gpu ? aws_ecs_capacity_provider.gpu[0].name : null
  depends_on  = [aws_ecs_cluster_capacity_providers.this]
}
