variable "name" {
  description = "Prefix of every resource name, e.g. manyheads-prod."
  type        = string
}

variable "vpc_cidr" {
  description = "IPv4 range of the VPC (a /16 leaves room for /20 private and /24 public subnets)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be an IPv4 CIDR block."
  }
}

variable "availability_zones" {
  description = "Availability zones to spread subnets over (two or more)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6
    error_message = "Give between 2 and 6 availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = true
}

variable "alb_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the public router load balancer on 80/443."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "router_port" {
  description = "Port the router containers listen on (API_PORT)."
  type        = number
  default     = 8000
}

variable "embedder_port" {
  description = "gRPC port of the embedder containers and of its internal load balancer."
  type        = number
  default     = 50051
}

variable "database_port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432
}
