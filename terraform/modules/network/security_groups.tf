# Who may talk to whom:
#
#   internet --80/443--> router ALB --router_port--> router tasks
#   router tasks, training tasks --embedder_port--> embedder NLB --embedder_port--> embedder tasks
#   router tasks, training tasks, migration tasks --database_port--> PostgreSQL
#   router tasks --2049 (NFS)--> EFS mount targets of the router spool
#
# Tasks may open any outbound connection (AWS APIs through NAT, the S3 endpoint, each other
# through the rules above); nothing else is allowed in.

resource "aws_security_group" "alb" {
  name        = "${var.name}-router-alb"
  description = "Public load balancer of the HTTP routers"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-router-alb" }
}

resource "aws_security_group" "router" {
  name        = "${var.name}-router"
  description = "Router tasks (gunicorn + model-sync sidecar)"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-router" }
}

resource "aws_security_group" "embedder_lb" {
  name        = "${var.name}-embedder-lb"
  description = "Internal gRPC load balancer of the embedder"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-embedder-lb" }
}

resource "aws_security_group" "embedder" {
  name        = "${var.name}-embedder"
  description = "Embedder tasks"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-embedder" }
}

resource "aws_security_group" "training" {
  name        = "${var.name}-training"
  description = "One-shot training tasks"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-training" }
}

resource "aws_security_group" "migrations" {
  name        = "${var.name}-migrations"
  description = "One-shot database migration tasks"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-migrations" }
}

resource "aws_security_group" "router_spool" {
  name        = "${var.name}-router-spool"
  description = "EFS mount targets of the router spool"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-router-spool" }
}

resource "aws_security_group" "database" {
  name        = "${var.name}-database"
  description = "PostgreSQL inference database"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-database" }
}

resource "aws_security_group" "gpu_instances" {
  name        = "${var.name}-gpu-instances"
  description = "EC2 container instances of the GPU capacity provider (tasks use their own ENIs)"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-gpu-instances" }
}

# --- router load balancer -------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTP from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "alb_to_router" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Requests and health checks to router tasks"
  referenced_security_group_id = aws_security_group.router.id
  ip_protocol                  = "tcp"
  from_port                    = var.router_port
  to_port                      = var.router_port
}

# --- routers ----------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "router_from_alb" {
  security_group_id            = aws_security_group.router.id
  description                  = "Only the router load balancer"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = var.router_port
  to_port                      = var.router_port
}

# --- embedder ---------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "embedder_lb_from_clients" {
  for_each = {
    router   = aws_security_group.router.id
    training = aws_security_group.training.id
  }

  security_group_id            = aws_security_group.embedder_lb.id
  description                  = "gRPC from ${each.key} tasks"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.embedder_port
  to_port                      = var.embedder_port
}

resource "aws_vpc_security_group_egress_rule" "embedder_lb_to_tasks" {
  security_group_id            = aws_security_group.embedder_lb.id
  description                  = "gRPC and health checks to embedder tasks"
  referenced_security_group_id = aws_security_group.embedder.id
  ip_protocol                  = "tcp"
  from_port                    = var.embedder_port
  to_port                      = var.embedder_port
}

resource "aws_vpc_security_group_ingress_rule" "embedder_from_lb" {
  security_group_id            = aws_security_group.embedder.id
  description                  = "Only the internal embedder load balancer"
  referenced_security_group_id = aws_security_group.embedder_lb.id
  ip_protocol                  = "tcp"
  from_port                    = var.embedder_port
  to_port                      = var.embedder_port
}

# --- database ---------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "database_from_clients" {
  for_each = {
    router     = aws_security_group.router.id
    training   = aws_security_group.training.id
    migrations = aws_security_group.migrations.id
  }

  security_group_id            = aws_security_group.database.id
  description                  = "PostgreSQL from ${each.key} tasks"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
}

# --- router spool (EFS) ---------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "router_spool_from_router" {
  security_group_id            = aws_security_group.router_spool.id
  description                  = "NFS from router tasks only"
  referenced_security_group_id = aws_security_group.router.id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}

# --- outbound from tasks and container instances ------------------------------------------

resource "aws_vpc_security_group_egress_rule" "tasks_any" {
  for_each = {
    router        = aws_security_group.router.id
    embedder      = aws_security_group.embedder.id
    training      = aws_security_group.training.id
    migrations    = aws_security_group.migrations.id
    gpu_instances = aws_security_group.gpu_instances.id
  }

  security_group_id = each.value
  description       = "Outbound: AWS APIs, image pulls, S3, the embedder and the database"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}
