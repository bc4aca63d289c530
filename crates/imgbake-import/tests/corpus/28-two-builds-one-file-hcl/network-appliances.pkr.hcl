# Two small network appliance AMIs from one source definition. Each build
# block names its own copy of the source and sets its own AMI name.
#   packer build -only='bastion.*' network-appliances.pkr.hcl

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
  default = "eu-west-3"
}

locals {
  date = formatdate("YYYYMMDD", timestamp())
}

source "amazon-ebs" "al2023" {
  region        = var.region
  instance_type = "t4g.micro"
  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-arm64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }
  ssh_username     = "ec2-user"
  force_deregister = true
}

build {
  name = "bastion"

  source "source.amazon-ebs.al2023" {
    name     = "bastion"
    ami_name = "netops-bastion-${local.date}"
    tags = {
      Role = "bastion"
    }
  }

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    script          = "scripts/bastion.sh"
  }
}

build {
  name = "nat"

  source "source.amazon-ebs.al2023" {
    name     = "nat"
    ami_name = "netops-nat-${local.date}"
    tags = {
      Role = "nat"
    }
  }

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    script          = "scripts/nat.sh"
  }

  post-processor "manifest" {
    output = "nat-manifest.json"
  }
}
