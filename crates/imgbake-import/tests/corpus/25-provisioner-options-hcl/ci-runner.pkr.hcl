// CI runner AMI. Exercises most knobs of the shell, file and shell-local
// provisioners, an error-cleanup-provisioner and a post-build shell-local.

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
  default = "us-east-1"
}

variable "runner_version" {
  type    = string
  default = "16.11.1"
}

variable "registration_token" {
  type      = string
  sensitive = true
  default   = ""
}

local "runner_tarball" {
  expression = "gitlab-runner-${var.runner_version}-linux-amd64"
}

local "registration" {
  expression = var.registration_token
  sensitive  = true
}

locals {
  # 2024-05-17T09:31:02Z -> 20240517093102
  build_id = regex_replace(timestamp(), "[- TZ:]", "")
  ami_name = lower("CI-Runner-${var.runner_version}-${local.build_id}")
}

source "amazon-ebs" "runner" {
  region        = var.region
  instance_type = "c6i.large"
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["099720109477"]
    most_recent = true
  }
  ssh_username = "ubuntu"
  ami_name     = local.ami_name
  tags = {
    Name          = local.ami_name
    RunnerVersion = var.runner_version
  }
}

build {
  sources = ["source.amazon-ebs.runner"]

  # Plain inline with a custom shebang and retries while sshd settles.
  provisioner "shell" {
    inline_shebang      = "/bin/bash -ex"
    inline              = ["whoami", "uname -a", "test -d /etc/cloud && cloud-init status --wait"]
    start_retry_timeout = "5m"
    max_retries         = 3
  }

  # Kernel upgrade that reboots the box: expect the connection to drop, then
  # give it time to come back before the next step.
  provisioner "shell" {
    execute_command   = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    script            = "scripts/kernel-upgrade.sh"
    expect_disconnect = true
    skip_clean        = true
  }

  provisioner "shell" {
    pause_before    = "45s"
    execute_command = "sudo -E bash '{{ .Path }}'"
    script          = "scripts/after-reboot-check.sh"
    timeout         = "5m"
  }

  # Several files, one destination directory; plus a file written from content.
  provisioner "file" {
    sources     = ["files/conf.d/concurrency.toml", "files/conf.d/cache.toml"]
    destination = "/tmp/runner-conf.d/"
  }

  provisioner "file" {
    content     = "RUNNER_VERSION=${var.runner_version}\nBUILD_ID=${local.build_id}\n"
    destination = "/tmp/runner-release"
  }

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    env = {
      RUNNER_VERSION = var.runner_version
      RUNNER_TARBALL = local.runner_tarball
      REGISTRATION   = local.registration
    }
    use_env_var_file = true
    remote_folder    = "/var/tmp"
    remote_file      = "install-runner.sh"
    script           = "scripts/install-runner.sh"
    # apt-get returns 100 when a mirror is flaky but packages are installed.
    valid_exit_codes = [0, 100]
  }

  provisioner "shell" {
    environment_vars = ["HOME_DIR=/home/ubuntu"]
    inline = [
      "echo \"runner files: $(ls /tmp/runner-conf.d | wc -l)\"",
      "echo \"home is $${HOME_DIR}\"",
      "sudo gitlab-runner --version > /tmp/runner-version.txt",
    ]
  }

  provisioner "file" {
    direction   = "download"
    source      = "/tmp/runner-version.txt"
    destination = "out/runner-version.txt"
  }

  provisioner "shell-local" {
    inline = ["cat out/runner-version.txt", "test -s out/runner-version.txt"]
  }

  # Refuse to finish if an AMI with this name already exists in the account.
  provisioner "shell-local" {
    command = "test \"$(aws ec2 describe-images --region ${var.region} --owners self --filters Name=name,Values=${local.ami_name} --query 'length(Images)' --output text)\" = 0"
  }

  provisioner "breakpoint" {
    disable = true
    note    = "Before cleanup"
  }

  provisioner "shell" {
    execute_command = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    inline = [
      "rm -rf /tmp/runner-conf.d /tmp/runner-release /tmp/runner-version.txt /var/tmp/install-runner.sh",
      "cloud-init clean --logs",
    ]
  }

  # Runs only when a provisioner above fails.
  error-cleanup-provisioner "shell-local" {
    inline = ["echo 'build ${local.build_id} failed; instance is being torn down' >&2"]
  }

  post-processor "shell-local" {
    only_on          = ["linux", "darwin"]
    environment_vars = ["AMI_NAME=${local.ami_name}"]
    script           = "scripts/notify.sh"
  }
}
