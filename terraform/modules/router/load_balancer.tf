# Internet-facing ALB. API keys travel in every request, so it serves HTTPS on 443 (TLS 1.2 or
# newer, certificate_arn) and port 80 only redirects to it. Plain HTTP on 80 happens only when
# there is no certificate and allow_plain_http says so explicitly (throwaway test stacks).

resource "aws_lb" "this" {
  name                       = "${var.name}-router"
  internal                   = false
  load_balancer_type         = "application"
  subnets                    = var.public_subnet_ids
  security_groups            = [var.alb_security_group_id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = 60
}

resource "aws_lb_target_group" "this" {
  name                 = "${var.name}-router"
  port                 = var.port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    path                = var.health_check_path
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  lifecycle {
    precondition {
      condition     = local.https || var.allow_plain_http
      error_message = "The API needs HTTPS: set certificate_arn (an ACM certificate), or allow_plain_http = true for a test stack."
    }
  }

  default_action {
    type             = local.https ? "redirect" : "forward"
    target_group_arn = local.https ? null : aws_lb_target_group.this.arn

    dynamic "redirect" {
      for_each = local.https ? [443] : []
      content {
        port        = tostring(redirect.value)
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count = local.https ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
}
