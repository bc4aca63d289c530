# Converge long-lived lab hosts with masterless Puppet. The null builder makes
# no image; it only gives the provisioners an SSH connection.

packer {
  required_plugins {
    puppet = {
      source  = "github.com/hashicorp/puppet"
      version = ">= 1.1.0"
    }
  }
}

variable "host" {
  type        = string
  description = "Address of the lab host to converge."
}

variable "ssh_user" {
  type    = string
  default = "labadmin"
}

variable "ssh_key_file" {
  type    = string
  default = "~/.ssh/lab_ed25519"
}

variable "role" {
  type    = string
  default = "buildagent"
}

variable "puppet_release" {
  type    = string
  default = "puppet8"
}

source "null" "lab" {
  communicator         = "ssh"
  ssh_host             = var.host
  ssh_username         = var.ssh_user
  ssh_private_key_file = pathexpand(var.ssh_key_file)
  ssh_timeout          = "1m"
}

build {
  name    = "lab-converge"
  sources = ["source.null.lab"]

  provisioner "shell" {
    environment_vars = ["PUPPET_RELEASE=${var.puppet_release}"]
    execute_command  = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    inline = [
      "if ! command -v /opt/puppetlabs/bin/puppet >/dev/null; then",
      "  . /etc/os-release",
      "  curl -fsSLo /tmp/release.deb https://apt.puppet.com/$${PUPPET_RELEASE}-release-$${VERSION_CODENAME}.deb",
      "  dpkg -i /tmp/release.deb && apt-get update -q && apt-get install -y -q puppet-agent",
      "fi",
    ]
  }

  # hiera_config_path uploads only hiera.yaml; its data directory has to be
  # put next to it in the staging directory beforehand.
  provisioner "shell" {
    inline = ["mkdir -p /tmp/packer-puppet-masterless"]
  }

  provisioner "file" {
    source      = "puppet/hieradata"
    destination = "/tmp/packer-puppet-masterless"
  }

  provisioner "puppet-masterless" {
    manifest_file     = "puppet/manifests/site.pp"
    module_paths      = ["puppet/modules"]
    hiera_config_path = "puppet/hiera.yaml"
    puppet_bin_dir    = "/opt/puppetlabs/bin"
    staging_directory = "/tmp/packer-puppet-masterless"
    facter = {
      role        = var.role
      lab_managed = "true"
    }
    # The default execute_command already passes --detailed-exitcodes and
    # treats exit code 2 (changes applied) as success.
    extra_arguments = ["--verbose", "--environment=production"]
  }
}
