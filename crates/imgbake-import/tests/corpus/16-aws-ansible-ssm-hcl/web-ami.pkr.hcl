# Web tier AMI configured by Ansible. No inbound SSH: Packer tunnels SSH
# through AWS Systems Manager Session Manager (ssh_interface = "session_manager").

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.6"
    }
    ansible = {
      source  = "github.com/hashicorp/ansible"
      version = "~> 1"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "environment" {
  type    = string
  default = "staging"

  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "The environment must be staging or production."
  }
}

variable "nginx_worker_connections" {
  type    = number
  default = 2048
}

variable "debug_pause" {
  type        = bool
  default     = false
  description = "Set true to stop at the breakpoint before the AMI is created."
}

locals {
  ami_name = "web-${var.environment}-${formatdate("YYYY-MM-DD-hhmmss", timestamp())}"
}

source "amazon-ebs" "web" {
  region        = var.region
  instance_type = "t3.medium"

  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["099720109477"]
    most_recent = true
  }

  iam_instance_profile = "packer-ssm-build"
  subnet_id            = "subnet-0d1e2f3a4b5c6d7e8"
  ssh_interface        = "session_manager"
  communicator         = "ssh"
  ssh_username         = "ubuntu"
  pause_before_ssm     = "30s"

  ami_name = local.ami_name
  tags = {
    Name        = local.ami_name
    Environment = var.environment
    ManagedBy   = "ansible"
  }
  run_tags = {
    Name = "packer-${local.ami_name}"
  }
}

build {
  sources = ["source.amazon-ebs.web"]

  provisioner "shell" {
    inline = [
      "cloud-init status --wait",
      "sudo apt-get update -q",
      "sudo apt-get install -y -q python3-apt",
    ]
  }

  provisioner "ansible" {
    playbook_file = "ansible/site.yml"
    galaxy_file   = "ansible/requirements.yml"
    user          = "ubuntu"
    use_proxy     = false
    groups        = ["web", var.environment]
    extra_arguments = [
      "--extra-vars", "env=${var.environment} nginx_worker_connections=${var.nginx_worker_connections}",
      "-v",
    ]
    ansible_env_vars = [
      "ANSIBLE_HOST_KEY_CHECKING=False",
      "ANSIBLE_ROLES_PATH=ansible/roles",
      "ANSIBLE_FORCE_COLOR=1",
    ]
  }

  provisioner "breakpoint" {
    disable = !var.debug_pause
    note    = "Ansible finished. Inspect the instance through Session Manager, then press enter."
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
    custom_data = {
      environment = var.environment
    }
  }
}
