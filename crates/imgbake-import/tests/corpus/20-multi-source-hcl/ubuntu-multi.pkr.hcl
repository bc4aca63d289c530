# Ubuntu 24.04 base for three targets from one build block:
#   amazon-ebs.amd64  - x86_64 AMI
#   amazon-ebs.arm64  - Graviton AMI (same source, overridden inside build)
#   qemu.kvm          - qcow2 for the KVM farm

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "root_volume_gb" {
  type    = number
  default = 12
}

variable "encrypt" {
  type    = bool
  default = true
}

variable "extra_packages" {
  type    = list(string)
  default = ["htop", "tmux", "nvme-cli"]
}

variable "common_tags" {
  type = map(string)
  default = {
    Owner      = "platform-infra"
    CostCenter = "cc-1042"
  }
}

locals {
  version = formatdate("YYYY.MM.DD", timestamp())
  tags = merge(var.common_tags, {
    OS      = "ubuntu"
    Release = "24.04"
    Version = local.version
  })
}

source "amazon-ebs" "amd64" {
  region        = var.region
  instance_type = "t3.small"
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["099720109477"]
    most_recent = true
  }
  ssh_username = "ubuntu"

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = var.root_volume_gb
    volume_type           = "gp3"
    delete_on_termination = true
  }
  encrypt_boot = var.encrypt

  ami_name = "ubuntu-2404-amd64-${local.version}-{{timestamp}}"
  tags     = merge(local.tags, { Arch = "amd64" })
}

source "qemu" "kvm" {
  iso_url          = "https://cloud-images.ubuntu.com/releases/24.04/release/ubuntu-24.04-server-cloudimg-amd64.img"
  iso_checksum     = "file:https://cloud-images.ubuntu.com/releases/24.04/release/SHA256SUMS"
  disk_image       = true
  disk_size        = "${var.root_volume_gb}G"
  format           = "qcow2"
  accelerator      = "kvm"
  memory           = 2048
  cpus             = 2
  headless         = true
  output_directory = "output/kvm"
  vm_name          = "ubuntu-2404-${local.version}.qcow2"
  cd_files         = ["cidata/*"]
  cd_label         = "cidata"
  ssh_username     = "ubuntu"
  ssh_password     = "ubuntu"
  shutdown_command = "echo 'ubuntu' | sudo -S shutdown -P now"
}

build {
  name = "ubuntu-2404"

  sources = [
    "source.amazon-ebs.amd64",
    "source.qemu.kvm",
  ]

  # Same AMI definition, retargeted at Graviton.
  source "source.amazon-ebs.amd64" {
    name          = "arm64"
    instance_type = "t4g.small"
    source_ami_filter {
      filters = {
        name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*"
        virtualization-type = "hvm"
        root-device-type    = "ebs"
      }
      owners      = ["099720109477"]
      most_recent = true
    }
    ami_name = "ubuntu-2404-arm64-${local.version}-{{timestamp}}"
    tags     = merge(local.tags, { Arch = "arm64" })
  }

  provisioner "shell" {
    inline = ["cloud-init status --wait"]
  }

  provisioner "shell" {
    execute_command  = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = ["EXTRA_PACKAGES=${join(" ", var.extra_packages)}"]
    script           = "scripts/base.sh"
    except           = ["qemu.kvm"]
  }

  provisioner "shell" {
    execute_command  = "echo 'ubuntu' | sudo -S -E sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = ["EXTRA_PACKAGES=${join(" ", var.extra_packages)}"]
    scripts          = ["scripts/base.sh", "scripts/kvm-guest.sh"]
    only             = ["qemu.kvm"]
  }

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    script          = "scripts/ec2-agents.sh"
    only            = ["amazon-ebs.amd64", "amazon-ebs.arm64"]
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }

  post-processor "checksum" {
    only           = ["qemu.kvm"]
    checksum_types = ["sha256"]
    output         = "output/kvm/SHA256SUMS"
  }
}
