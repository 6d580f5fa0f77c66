# The router's spool on EFS: the inference log's write-ahead journal, the rows that wait while
# PostgreSQL is down, and the API-key snapshot (API_SPOOL_DIR). On the task's own storage they
# would vanish with the task; here they outlive it.
#
# One folder for every router task. Its files are per process (`journal-<pid>-<random>.jsonl`,
# `spool-<pid>-<random>.jsonl`), created under a hidden name and renamed, and each is held
# with an exclusive flock while its process may still write it (inferencedb/spool.py). Any
# router process claims a file whose lock is free (its writer let go of it, or died) and
# replays it, so rows a task leaves behind are replayed by the other tasks or by its
# replacement. EFS speaks NFSv4.1: flock is a whole-file lock held by the server, renames are
# atomic, and the locks of a task that died are freed when the server expires its lease.
#
# Only the router task role can mount it, only through the access point (which maps every
# client to the router image's uid and confines it to /router-spool), and only over TLS.

resource "aws_efs_file_system" "spool" {
  creation_token   = "${var.name}-router-spool"
  encrypted        = true
  kms_key_id       = var.spool_kms_key_arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic" # tiny, bursty traffic: pay per use, never throttled by credits

  tags = { Name = "${var.name}-router-spool" }
}

# One mount target per zone of the router tasks.
resource "aws_efs_mount_target" "spool" {
  count = length(var.private_subnet_ids)

  file_system_id  = aws_efs_file_system.spool.id
  subnet_id       = var.private_subnet_ids[count.index]
  security_groups = [var.spool_security_group_id]
}

resource "aws_efs_access_point" "spool" {
  file_system_id = aws_efs_file_system.spool.id

  posix_user {
    uid = var.run_as_uid
    gid = var.run_as_uid
  }

  root_directory {
    path = "/router-spool"

    creation_info {
      owner_uid   = var.run_as_uid
      owner_gid   = var.run_as_uid
      permissions = "0700"
    }
  }

  tags = { Name = "${var.name}-router-spool" }
}

resource "aws_efs_file_system_policy" "spool" {
  file_system_id = aws_efs_file_system.spool.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "RouterTasksThroughTheAccessPoint"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.task.arn }
        Action    = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
        Resource  = aws_efs_file_system.spool.arn
        Condition = {
          StringEquals = { "elasticfilesystem:AccessPointArn" = aws_efs_access_point.spool.arn }
          Bool         = { "aws:SecureTransport" = "true" }
        }
      },
      {
        Sid       = "NothingWithoutTls"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "*"
        Resource  = aws_efs_file_system.spool.arn
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
}
