output "repository_urls" {
  description = "Registry URL per role, for docker tag/push and for task definitions."
  value       = { for role, repo in aws_ecr_repository.this : role => repo.repository_url }
}

output "repository_arns" {
  value = { for role, repo in aws_ecr_repository.this : role => repo.arn }
}
