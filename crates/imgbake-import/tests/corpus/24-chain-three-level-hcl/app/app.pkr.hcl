# Level 3 of 3: the storefront app on the newest Node 20 runtime AMI.

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

variable "release" {
  type    = string
  default = "2024.24.3"
}

source "amazon-ebs" "storefront" {
  region        = var.region
  instance_type = "t3.medium"
  source_ami_filter {
    filters = {
      name        = "acme-runtime-node20-*"
      "tag:Layer" = "runtime"
    }
    owners      = ["self"]
    most_recent = true
  }
  ssh_username = "ubuntu"
  ami_name     = "acme-storefront-${var.release}"
  tags = {
    Layer   = "app"
    Release = var.release
  }
}

build {
  sources = ["source.amazon-ebs.storefront"]

  provisioner "file" {
    source      = "${path.root}/files/storefront.env"
    destination = "/tmp/storefront.env"
  }

  provisioner "shell" {
    execute_command  = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = ["RELEASE=${var.release}"]
    script           = "${path.root}/scripts/storefront.sh"
  }

  post-processor "manifest" {
    output = "${path.root}/manifest.json"
  }
}
