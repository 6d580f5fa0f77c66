output "vpc_id" {
  value = aws_vpc.this.id
}

output "vpc_cidr" {
  value = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "One per availability zone, in the order of var.availability_zones."
  value       = [for zone in var.availability_zones : aws_subnet.public[zone].id]
}

output "private_subnet_ids" {
  description = "One per availability zone, in the order of var.availability_zones."
  value       = [for zone in var.availability_zones : aws_subnet.private[zone].id]
}

output "nat_public_ips" {
  description = "Source addresses of outbound traffic from the private subnets."
  value       = [for eip in aws_eip.nat : eip.public_ip]
}

output "security_group_ids" {
  description = "Security group per role: alb, router, router_spool, embedder_lb, embedder, training, migrations, database, gpu_instances."
  value = {
    alb           = aws_security_group.alb.id
    router        = aws_security_group.router.id
    router_spool  = aws_security_group.router_spool.id
    embedder_lb   = aws_security_group.embedder_lb.id
    embedder      = aws_security_group.embedder.id
    training      = aws_security_group.training.id
    migrations    = aws_security_group.migrations.id
    database      = aws_security_group.database.id
    gpu_instances = aws_security_group.gpu_instances.id
  }
}
