# KVM guest image for the on-prem OpenStack cloud: customise the upstream
# Debian 12 generic cloud image (a qcow2) rather than installing from ISO.

packer {
  required_plugins {
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0"
    }
  }
}

variable "image_url" {
  type    = string
  default = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"
}

variable "image_checksum" {
  type    = string
  default = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

variable "ssh_password" {
  type        = string
  default     = "packer"
  sensitive   = true
  description = "Build-only password set by the cloud-init seed; removed by cleanup.sh."
}

variable "disk_size" {
  type    = string
  default = "10G"
}

variable "memory" {
  type    = number
  default = 2048
}

variable "cpus" {
  type    = number
  default = 2
}

locals {
  version    = formatdate("YYYYMMDD", timestamp())
  output_dir = "output/debian12-kvm-${local.version}"
}

source "qemu" "debian12" {
  iso_url          = var.image_url
  iso_checksum     = var.image_checksum
  disk_image       = true
  use_backing_file = false
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  disk_compression = true
  net_device       = "virtio-net"
  format           = "qcow2"
  accelerator      = "kvm"
  memory           = var.memory
  cpus             = var.cpus
  headless         = true
  vm_name          = "debian12-kvm-${local.version}.qcow2"
  output_directory = local.output_dir
  qemuargs = [
    ["-cpu", "host"],
  ]

  # NoCloud seed: a CD labelled cidata carrying user-data and meta-data.
  cd_files = ["cloud-init/user-data", "cloud-init/meta-data"]
  cd_label = "cidata"

  communicator     = "ssh"
  ssh_username     = "packer"
  ssh_password     = var.ssh_password
  ssh_timeout      = "10m"
  shutdown_command = "echo '${var.ssh_password}' | sudo -S shutdown -P now"
}

build {
  sources = ["source.qemu.debian12"]

  provisioner "shell" {
    inline = ["cloud-init status --wait || true"]
  }

  provisioner "shell" {
    execute_command = "echo 'packer' | sudo -S sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = [
      "DEBIAN_FRONTEND=noninteractive",
      "IMAGE_VERSION=${local.version}",
    ]
    scripts = [
      "scripts/openstack-guest.sh",
      "scripts/cleanup.sh",
    ]
  }

  post-processor "checksum" {
    checksum_types = ["sha256"]
    output         = "${local.output_dir}/SHA256SUMS"
  }

  post-processor "shell-local" {
    environment_vars = ["OUT=${local.output_dir}", "NAME=debian12-kvm-${local.version}"]
    inline = [
      "qemu-img info $${OUT}/$${NAME}.qcow2",
      "qemu-img convert -O raw $${OUT}/$${NAME}.qcow2 $${OUT}/$${NAME}.raw",
    ]
  }
}
