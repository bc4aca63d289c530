# Layer 1: RHEL-compatible base (Rocky 9) for the data platform.

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1.3"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

locals {
  stamp = formatdate("YYYYMMDDhhmm", timestamp())
}

data "amazon-ami" "rocky9" {
  region = var.region
  filters = {
    name                = "Rocky-9-EC2-Base-9.*x86_64*"
    virtualization-type = "hvm"
    root-device-type    = "ebs"
  }
  owners      = ["792107900819"]
  most_recent = true
}

source "amazon-ebs" "base" {
  region        = var.region
  source_ami    = data.amazon-ami.rocky9.id
  instance_type = "t3.medium"
  ssh_username  = "rocky"
  ami_name      = "dataplat-base-rocky9-${local.stamp}"
  tags = {
    Name  = "dataplat-base-rocky9"
    Layer = "base"
  }
}

build {
  sources = ["source.amazon-ebs.base"]

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    script          = "scripts/base.sh"
  }

  post-processor "manifest" {
    output = "base-manifest.json"
  }
}
