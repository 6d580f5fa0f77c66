output "address" {
  description = "Host name of the instance (PGHOST)."
  value       = aws_db_instance.this.address
}

output "port" {
  value = aws_db_instance.this.port
}

output "database_name" {
  value = aws_db_instance.this.db_name
}

output "instance_identifier" {
  value = aws_db_instance.this.identifier
}

output "master_user_secret_arn" {
  description = "ARN of the RDS-managed secret (JSON keys username and password). Never the password itself."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "master_user_secret_kms_key_arn" {
  description = "Customer-managed key of the master and service secrets, or null when aws/secretsmanager encrypts them."
  value       = var.master_user_secret_kms_key_arn
}

output "service_roles" {
  description = "Login role per service."
  value       = var.service_roles
}

output "service_secret_arns" {
  description = "ARN of each service's secret (JSON keys username and password), by service. Never the password itself."
  value       = { for service, secret in aws_secretsmanager_secret.service : service => secret.arn }
}
