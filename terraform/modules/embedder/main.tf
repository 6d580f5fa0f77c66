# The central embedding service: `python -m embedder serve` behind an internal load balancer.
#
# Why a Network Load Balancer and not an internal ALB with a gRPC target group:
# - An ALB only speaks gRPC on an HTTPS listener, so it would need a certificate for an
#   internal name and a TLS-speaking client. embedder.client.EmbedderClient opens a plaintext
#   channel (grpc.insecure_channel), so an ALB would not work without changing the client.
# - An NLB passes the HTTP/2 connection through untouched. It balances per connection, not per
#   request, which is acceptable here: every gunicorn worker process of every router holds
#   its own channel, so there are (routers x API_WORKERS) long-lived connections spread
#   over the embedder tasks, and cross-zone balancing is on. After a scale-out, new tasks
#   only receive connections opened later (new router workers, reconnects); a server-side
#   max connection age in the embedder would rebalance faster (see docs/deployment.md).
# - The NLB health check is TCP on the gRPC port. The embedder opens that port only after the
#   model is loaded and warmed up, so "accepts connections" means "can embed". The container
#   health check runs the real grpc.health.v1 probe (`python -m embedder health`), and ECS
#   replaces a task that fails it.

locals {
  container = "embedder"

  environment = merge(
    {
      EMBEDDER_ADDRESS          = "0.0.0.0:${var.port}"
      EMBEDDER_MODEL            = var.model
      EMBEDDER_METRICS_PORT     = tostring(var.metrics_port)
      EMBEDDER_METRICS_ADDRESS  = "0.0.0.0"
      EMBEDDER_CACHE_SIZE       = tostring(var.cache_size)
      EMBEDDER_MAX_BATCH_SIZE   = tostring(var.max_batch_size)
      EMBEDDER_GRPC_THREADS     = tostring(var.grpc_threads)
      EMBEDDER_LANES            = tostring(var.lanes)
      EMBEDDER_TF_THREADS       = tostring(var.tf_threads)
      EMBEDDER_SHUTDOWN_GRACE_S = tostring(var.shutdown_grace_s)
    },
    var.extra_environment,
  )

  container_definition = merge(
    {
      name      = local.container
      image     = var.image
      essential = true
      portMappings = [
        { name = "grpc", containerPort = var.port, protocol = "tcp" },
        { name = "metrics", containerPort = var.metrics_port, protocol = "tcp" },
      ]
      environment = [for key in sort(keys(local.environment)) : { name = key, value = local.environment[key] }]
      healthCheck = {
        command     = ["CMD", "python", "-m", "embedder", "health", "--address", "127.0.0.1:${var.port}"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 180 # TensorFlow import, model load and warm-up
      }
      # SIGTERM starts the drain; ECS sends SIGKILL after stopTimeout.
      stopTimeout = min(120, ceil(var.shutdown_grace_s) + 10)
      ulimits     = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = local.container
        }
      }
    },
    var.use_gpu ? { resourceRequirements = [{ type = "GPU", value = tostring(var.gpus_per_task) }] } : {},
  )
}

data "aws_region" "current" {}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}/embedder"
  retention_in_days = var.log_retention_days
}

resource "aws_iam_role" "execution" {
  name = "${var.name}-embedder-execution"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# The embedder calls no AWS API; an empty task role keeps it from ever borrowing another
# identity (the GPU instances block instance metadata for awsvpc tasks as well).
resource "aws_iam_role" "task" {
  name = "${var.name}-embedder-task"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-embedder"
  requires_compatibilities = [var.use_gpu ? "EC2" : "FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode([local.container_definition])

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
}

resource "aws_lb" "this" {
  name                             = "${var.name}-embedder"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  security_groups                  = [var.lb_security_group_id]
  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "this" {
  name                 = "${var.name}-embedder"
  port                 = var.port
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = var.deregistration_delay_s
  # Tasks see the load balancer as the peer, so their security group can admit just the NLB.
  preserve_client_ip = false

  health_check {
    protocol            = "TCP"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "grpc" {
  load_balancer_arn        = aws_lb.this.arn
  port                     = var.port
  protocol                 = "TCP"
  tcp_idle_timeout_seconds = var.idle_timeout_s

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
}

resource "aws_ecs_service" "this" {
  name            = "embedder"
  cluster         = var.cluster_name
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = var.min_count
  launch_type     = var.use_gpu ? null : "FARGATE"

  dynamic "capacity_provider_strategy" {
    for_each = var.use_gpu ? [var.gpu_capacity_provider_name] : []
    content {
      capacity_provider = capacity_provider_strategy.value
      weight            = 1
    }
  }

  dynamic "ordered_placement_strategy" {
    for_each = var.use_gpu ? ["attribute:ecs.availability-zone"] : []
    content {
      type  = "spread"
      field = ordered_placement_strategy.value
    }
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.task_security_group_id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = local.container
    container_port   = var.port
  }

  health_check_grace_period_seconds  = 240
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    precondition {
      condition     = !var.use_gpu || var.gpu_capacity_provider_name != null
      error_message = "use_gpu needs the cluster's GPU capacity provider (enable_gpu on the cluster module)."
    }
    # Autoscaling owns the task count.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.grpc]
}

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-embedder-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_out_cooldown = 120
    scale_in_cooldown  = 600 # a new task needs minutes to load the model: scale in slowly

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
