# Level 2 of 3: Node.js runtime on the newest acme-base-noble AMI.

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

variable "node_major" {
  type    = number
  default = 20
}

data "amazon-ami" "base" {
  region = var.region
  filters = {
    name = "acme-base-noble-*"
  }
  owners      = ["self"]
  most_recent = true
}

source "amazon-ebs" "runtime" {
  region        = var.region
  source_ami    = data.amazon-ami.base.id
  instance_type = "t3.small"
  ssh_username  = "ubuntu"
  ami_name      = "acme-runtime-node${var.node_major}-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  tags = {
    Layer     = "runtime"
    NodeMajor = "${var.node_major}"
    ParentAMI = data.amazon-ami.base.id
  }
}

build {
  sources = ["source.amazon-ebs.runtime"]

  provisioner "shell" {
    execute_command  = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = ["NODE_MAJOR=${var.node_major}"]
    script           = "${path.root}/scripts/node.sh"
  }
}
