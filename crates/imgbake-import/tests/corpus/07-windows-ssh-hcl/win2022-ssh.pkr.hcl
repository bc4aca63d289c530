# Windows Server 2022 build agent image, provisioned over OpenSSH instead of
# WinRM. User data installs the OpenSSH capability and sets the password that
# Packer then logs in with.

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
  default = "ap-southeast-2"
}

variable "admin_password" {
  type        = string
  sensitive   = true
  description = "Administrator password set by user data and used by Packer over SSH."
}

variable "agent_version" {
  type    = string
  default = "3.236.1"
}

locals {
  date = formatdate("YYYY-MM-DD", timestamp())
}

source "amazon-ebs" "win2022_ssh" {
  region        = var.region
  instance_type = "c6i.xlarge"

  source_ami_filter {
    filters = {
      name                = "Windows_Server-2022-English-Full-Base-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  user_data = templatefile("bootstrap/openssh.pkrtpl.ps1", {
    admin_password = var.admin_password
  })

  communicator             = "ssh"
  ssh_username             = "Administrator"
  ssh_password             = var.admin_password
  ssh_timeout              = "25m"
  ssh_file_transfer_method = "sftp"

  associate_public_ip_address               = true
  ssh_interface                             = "public_ip"
  temporary_security_group_source_public_ip = true

  ami_name = "ci-agent-win2022-${local.date}-{{timestamp}}"
  tags = {
    Name         = "ci-agent-win2022"
    AgentVersion = var.agent_version
  }
}

build {
  sources = ["source.amazon-ebs.win2022_ssh"]

  provisioner "powershell" {
    inline = [
      "$PSVersionTable.PSVersion",
      "Get-Service sshd | Format-List Name, Status, StartType",
    ]
  }

  provisioner "powershell" {
    environment_vars = ["AGENT_VERSION=${var.agent_version}"]
    scripts = [
      "scripts/install-build-tools.ps1",
      "scripts/install-agent.ps1",
    ]
    pause_before = "10s"
  }

  provisioner "windows-restart" {
    restart_timeout = "20m"
  }

  provisioner "powershell" {
    inline = ["Remove-Item -Recurse -Force C:\\Windows\\Temp\\* -ErrorAction SilentlyContinue"]
  }
}
