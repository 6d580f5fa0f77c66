# One ECS cluster for every role. Routers and training jobs run on Fargate. The embedder
# runs on Fargate too, unless enable_gpu is set: then an Auto Scaling group of GPU instances
# (ECS GPU-optimized AMI: NVIDIA driver and container toolkit installed) joins the cluster as
# a capacity provider, and ECS grows or shrinks it to fit the GPU tasks it has to place.

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.container_insights ? "enabled" : "disabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name = aws_ecs_cluster.this.name
  capacity_providers = concat(
    ["FARGATE", "FARGATE_SPOT"],
    [for provider in aws_ecs_capacity_provider.gpu : provider.name],
  )

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

# --- GPU capacity (only when enable_gpu) ------------------------------------------------

data "aws_ssm_parameter" "gpu_ami" {
  count = var.enable_gpu ? 1 : 0
  name  = var.gpu_ami_ssm_parameter
}

resource "aws_iam_role" "gpu_instance" {
  count = var.enable_gpu ? 1 : 0

  name = "${var.name}-gpu-instance"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "gpu_instance" {
  for_each = var.enable_gpu ? toset([
    "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
  ]) : toset([])

  role       = aws_iam_role.gpu_instance[0].name
  policy_arn = each.value
}

resource "aws_iam_instance_profile" "gpu_instance" {
  count = var.enable_gpu ? 1 : 0

  name = "${var.name}-gpu-instance"
  role = aws_iam_role.gpu_instance[0].name
}

resource "aws_launch_template" "gpu" {
  count = var.enable_gpu ? 1 : 0

  name_prefix            = "${var.name}-gpu-"
  image_id               = data.aws_ssm_parameter.gpu_ami[0].value
  instance_type          = var.gpu_instance_type
  vpc_security_group_ids = [var.gpu_security_group_id]

  iam_instance_profile {
    arn = aws_iam_instance_profile.gpu_instance[0].arn
  }

  # Tasks get credentials from their task role, never from the instance: IMDSv2 only, one
  # hop (containers cannot reach it), and the agent blocks IMDS for awsvpc tasks as well.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.gpu_root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >> /etc/ecs/ecs.config <<'CONFIG'
    ECS_CLUSTER=${var.name}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_AWSVPC_BLOCK_IMDS=true
    ECS_ENABLE_CONTAINER_METADATA=true
    CONFIG
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-gpu" }
  }
}

resource "aws_autoscaling_group" "gpu" {
  count = var.enable_gpu ? 1 : 0

  name_prefix           = "${var.name}-gpu-"
  vpc_zone_identifier   = var.gpu_subnet_ids
  min_size              = var.gpu_min_instances
  max_size              = var.gpu_max_instances
  protect_from_scale_in = true # ECS managed termination protection drains before scale-in

  launch_template {
    id      = aws_launch_template.gpu[0].id
    version = aws_launch_template.gpu[0].latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  lifecycle {
    # The capacity provider owns desired capacity.
    ignore_changes = [desired_capacity]
  }
}

resource "aws_ecs_capacity_provider" "gpu" {
  count = var.enable_gpu ? 1 : 0

  name = "${var.name}-gpu"

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu[0].arn
    managed_termination_protection = "ENABLED"
    managed_draining               = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = var.gpu_target_capacity_percent
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = 2
    }
  }
}
