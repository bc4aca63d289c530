# Layer 2: Kafka broker image on top of the newest dataplat base AMI.

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

variable "kafka_version" {
  type    = string
  default = "3.7.0"
}

locals {
  stamp = formatdate("YYYYMMDDhhmm", timestamp())
}

# Finds what base.pkr.hcl produced: same name prefix, owned by this account.
data "amazon-ami" "dataplat_base" {
  region = var.region
  filters = {
    name        = "dataplat-base-rocky9-*"
    "tag:Layer" = "base"
  }
  owners      = ["self"]
  most_recent = true
}

source "amazon-ebs" "kafka" {
  region        = var.region
  source_ami    = data.amazon-ami.dataplat_base.id
  instance_type = "m6i.large"
  ssh_username  = "rocky"
  ami_name      = "dataplat-kafka-${var.kafka_version}-${local.stamp}"

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 30
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags = {
    Name         = "dataplat-kafka"
    Layer        = "app"
    KafkaVersion = var.kafka_version
    BaseAMI      = data.amazon-ami.dataplat_base.id
    BaseAMIName  = data.amazon-ami.dataplat_base.name
  }
}

build {
  sources = ["source.amazon-ebs.kafka"]

  provisioner "shell" {
    execute_command  = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = ["KAFKA_VERSION=${var.kafka_version}", "SCALA_VERSION=2.13"]
    script           = "scripts/kafka.sh"
  }

  post-processor "manifest" {
    output = "app-manifest.json"
  }
}
