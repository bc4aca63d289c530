# Encrypted Amazon Linux 2023 image for the payments accounts.
# Built on spot capacity, copied to two DR regions with per-region CMKs and
# shared with the workload accounts.

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.8"
    }
  }
}

variable "region" {
  type        = string
  default     = "eu-central-1"
  description = "Region the build instance runs in."
}

variable "kms_key_id" {
  type        = string
  default     = "arn:aws:kms:eu-central-1:111122223333:key/0f1e2d3c-4b5a-6978-8899-aabbccddeeff"
  description = "CMK used for the launch volume and the AMI in the build region."
}

variable "copy_regions" {
  type = map(string)
  default = {
    "eu-west-1"  = "arn:aws:kms:eu-west-1:111122223333:key/11111111-2222-3333-4444-555555555555"
    "eu-north-1" = "alias/payments-ami"
  }
  description = "DR regions to copy the AMI to, with the CMK to re-encrypt under in each."
}

variable "share_with_accounts" {
  type    = list(string)
  default = ["444455556666", "777788889999"]
}

variable "spot_max_price" {
  type    = string
  default = "0.0850"
}

variable "root_volume_size" {
  type    = number
  default = 16
}

locals {
  build_stamp = formatdate("YYYYMMDD-hhmm", timestamp())
  # AMIs built today stop being offered to new launches after 180 days.
  deprecate_at = timeadd(timestamp(), "4320h")
}

source "amazon-ebs" "al2023" {
  region = var.region

  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-kernel-6.1-x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
      architecture        = "x86_64"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  # Spot: Packer asks for the cheapest of these types under the max price.
  # instance_type must not be set together with spot_instance_types.
  spot_instance_types = ["m6i.large", "m5.large", "m5a.large", "m6a.large"]
  spot_price          = var.spot_max_price
  spot_tags = {
    Purpose = "packer-build"
  }

  subnet_filter {
    filters = {
      "tag:Tier" = "build"
    }
    most_free = true
  }
  ssh_interface = "private_ip"
  ssh_username  = "ec2-user"
  ssh_timeout   = "15m"

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.root_volume_size
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    encrypted             = true
    kms_key_id            = var.kms_key_id
    delete_on_termination = true
  }

  ami_name              = "payments-al2023-${local.build_stamp}"
  ami_description       = "Payments hardened Amazon Linux 2023 (encrypted)"
  encrypt_boot          = true
  kms_key_id            = var.kms_key_id
  ami_regions           = keys(var.copy_regions)
  region_kms_key_ids    = var.copy_regions
  ami_users             = var.share_with_accounts
  snapshot_users        = var.share_with_accounts
  force_deregister      = true
  force_delete_snapshot = true
  deprecate_at          = local.deprecate_at

  tags = {
    Name       = "payments-al2023"
    Compliance = "pci-dss"
    Encrypted  = "true"
    BuildStamp = local.build_stamp
    BaseAMI    = "{{ .SourceAMI }}"
  }
  snapshot_tags = {
    Name       = "payments-al2023-${local.build_stamp}"
    Compliance = "pci-dss"
  }
}

build {
  name    = "payments-al2023"
  sources = ["source.amazon-ebs.al2023"]

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    scripts = [
      "scripts/dnf-update.sh",
      "scripts/fips-and-audit.sh",
    ]
  }

  provisioner "shell" {
    inline = [
      "sudo dnf clean all",
      "sudo rm -rf /var/cache/dnf /tmp/*",
    ]
  }

  post-processor "manifest" {
    output     = "payments-manifest.json"
    strip_path = true
  }
}
