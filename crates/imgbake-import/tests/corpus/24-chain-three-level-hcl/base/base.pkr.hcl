# Level 1 of 3: OS base.

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-west-2"
}

data "amazon-ami" "ubuntu" {
  region = var.region
  filters = {
    name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
    virtualization-type = "hvm"
    root-device-type    = "ebs"
  }
  owners      = ["099720109477"]
  most_recent = true
}

source "amazon-ebs" "base" {
  region        = var.region
  source_ami    = data.amazon-ami.ubuntu.id
  instance_type = "t3.small"
  ssh_username  = "ubuntu"
  ami_name      = "acme-base-noble-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  tags = {
    Layer = "base"
  }
}

build {
  sources = ["source.amazon-ebs.base"]

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    script          = "${path.root}/scripts/base.sh"
  }
}
