// Windows Server 2022 base image, provisioned over WinRM (HTTPS).
// The Administrator password is the one EC2 generates; Packer fetches it with
// the temporary key pair and exposes it as build.Password.

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1"
    }
    windows-update = {
      source  = "github.com/rgl/windows-update"
      version = ">= 0.14.3"
    }
  }
}

variable "aws_region" {
  type    = string
  default = "us-east-2"
}

variable "instance_type" {
  type    = string
  default = "m6i.large"
}

variable "build_subnet_id" {
  type    = string
  default = "subnet-0c0ffee0c0ffee000"
}

variable "install_features" {
  type        = list(string)
  default     = ["Web-Server", "NET-Framework-45-Core", "Telnet-Client"]
  description = "Windows features baked into the image."
}

variable "update_limit" {
  type    = number
  default = 25
}

data "amazon-ami" "windows_2022" {
  region = var.aws_region
  filters = {
    name                = "Windows_Server-2022-English-Full-Base-*"
    virtualization-type = "hvm"
    root-device-type    = "ebs"
  }
  owners      = ["amazon"]
  most_recent = true
}

locals {
  stamp = regex_replace(timestamp(), "[- TZ:]", "")
}

source "amazon-ebs" "win2022" {
  region        = var.aws_region
  source_ami    = data.amazon-ami.windows_2022.id
  instance_type = var.instance_type
  subnet_id     = var.build_subnet_id

  communicator   = "winrm"
  winrm_username = "Administrator"
  winrm_use_ssl  = true
  winrm_insecure = true
  winrm_port     = 5986
  winrm_timeout  = "30m"

  user_data_file           = "bootstrap/enable-winrm.ps1"
  windows_password_timeout = "20m"

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 60
    volume_type           = "gp3"
    delete_on_termination = true
  }

  ami_name        = "acme-win2022-base-${local.stamp}"
  ami_description = "Acme Windows Server 2022 base"
  tags = {
    Name    = "acme-win2022-base"
    OS      = "Windows"
    Version = "2022"
    BaseAMI = data.amazon-ami.windows_2022.id
  }
}

build {
  sources = ["source.amazon-ebs.win2022"]

  provisioner "powershell" {
    inline = [
      "Write-Host 'Connected over WinRM as' $env:USERNAME",
      "Set-ExecutionPolicy -ExecutionPolicy RemoteSigned -Scope LocalMachine -Force",
    ]
  }

  provisioner "powershell" {
    elevated_user     = "Administrator"
    elevated_password = build.Password
    environment_vars = [
      "FEATURES=${join(",", var.install_features)}",
      "CHOCO_VERSION=2.2.2",
    ]
    scripts = [
      "scripts/install-features.ps1",
      "scripts/install-chocolatey.ps1",
    ]
    valid_exit_codes = [0, 3010]
  }

  provisioner "windows-restart" {
    restart_check_command = "powershell -command \"& {Write-Output 'restarted.'}\""
    restart_timeout       = "15m"
  }

  provisioner "windows-update" {
    search_criteria = "IsInstalled=0"
    filters = [
      "exclude:$_.Title -like '*Preview*'",
      "exclude:$_.InstallationBehavior.CanRequestUserInput",
      "include:$true",
    ]
    update_limit = var.update_limit
  }

  provisioner "windows-restart" {
    restart_timeout = "30m"
  }

  provisioner "powershell" {
    script = "scripts/sysprep.ps1"
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }
}
