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
  description = "Customer-managed key of the secret, or null when aws/secretsmanager encrypts it."
  value       = var.master_user_secret_kms_key_arn
}
