/*
 * PostgreSQL server AMI. Everything site-specific comes from var-files:
 *   packer build -var-file=vars/common.pkrvars.hcl -var-file=vars/prod.pkrvars.json postgres.pkr.hcl
 * Later var-files win over earlier ones; -var wins over both.
 */

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      version = ">= 1.2.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "aws_region" {
  type        = string
  default     = env("AWS_REGION")
  description = "Defaults to $AWS_REGION; env() is only allowed in variable defaults."
}

variable "environment" {
  type = string
}

variable "pg_major" {
  type    = number
  default = 16

  validation {
    condition     = var.pg_major >= 14 && var.pg_major <= 17
    error_message = "Only PostgreSQL 14 to 17 are supported."
  }
}

variable "enable_timescaledb" {
  type    = bool
  default = false
}

variable "pg_extensions" {
  type    = list(string)
  default = ["pg_stat_statements"]
}

variable "extra_tags" {
  type    = map(string)
  default = {}
}

variable "data_volumes" {
  type = list(object({
    device_name = string
    size_gb     = number
    iops        = number
  }))
  default = []
}

variable "instance_type" {
  type    = string
  default = null
}

locals {
  timestamp     = regex_replace(timestamp(), "[- TZ:]", "")
  build_date    = formatdate("YYYY-MM-DD", timestamp())
  instance_type = coalesce(var.instance_type, var.pg_major >= 16 ? "r6i.large" : "r5.large")
  extensions    = concat(var.pg_extensions, var.enable_timescaledb ? ["timescaledb"] : [])
  ami_name      = "pg${var.pg_major}-${var.environment}-${local.timestamp}"

  tags = merge(
    {
      Name        = "postgres-${var.pg_major}"
      Environment = var.environment
      BuildDate   = local.build_date
      Extensions  = join(",", local.extensions)
    },
    var.extra_tags,
  )
}

source "amazon-ebs" "postgres" {
  region        = var.aws_region
  instance_type = local.instance_type
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"]
    most_recent = true
  }
  ssh_username = "admin"

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 16
    volume_type           = "gp3"
    delete_on_termination = true
  }

  dynamic "launch_block_device_mappings" {
    for_each = var.data_volumes
    content {
      device_name           = launch_block_device_mappings.value.device_name
      volume_size           = launch_block_device_mappings.value.size_gb
      volume_type           = "gp3"
      iops                  = launch_block_device_mappings.value.iops
      delete_on_termination = true
    }
  }

  ami_name      = local.ami_name
  tags          = local.tags
  snapshot_tags = local.tags
}

build {
  sources = ["source.amazon-ebs.postgres"]

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = [
      "PG_MAJOR=${var.pg_major}",
      "PG_EXTENSIONS=${join(" ", local.extensions)}",
      "ENVIRONMENT=${var.environment}",
    ]
    script = "scripts/postgres.sh"
  }
}
