packer {
  required_plugins {
    virtualbox = {
      source  = "github.com/hashicorp/virtualbox"
      version = "~> 1"
    }
    vagrant = {
      source  = "github.com/hashicorp/vagrant"
      version = "~> 1"
    }
  }
}

variable "iso_url" {
  type    = string
  default = "https://download.rockylinux.org/pub/rocky/9/isos/x86_64/Rocky-9.4-x86_64-minimal.iso"
}

variable "iso_checksum" {
  type    = string
  default = "file:https://download.rockylinux.org/pub/rocky/9/isos/x86_64/CHECKSUM"
}

variable "box_version" {
  type    = string
  default = "9.4.0"
}

variable "vagrant_cloud_token" {
  type      = string
  sensitive = true
  default   = ""
}

variable "headless" {
  type    = bool
  default = true
}

source "virtualbox-iso" "rocky9" {
  guest_os_type = "RedHat_64"
  iso_url       = var.iso_url
  iso_checksum  = var.iso_checksum

  vm_name              = "rocky9-${var.box_version}"
  cpus                 = 2
  memory               = 2048
  disk_size            = 20480
  hard_drive_interface = "sata"
  firmware             = "bios"
  headless             = var.headless

  http_directory = "http"
  boot_wait      = "10s"
  boot_command = [
    "<up><wait><tab><wait>",
    " inst.text inst.ks=http://{{ .HTTPIP }}:{{ .HTTPPort }}/ks.cfg",
    "<enter><wait>",
  ]

  ssh_username = "vagrant"
  ssh_password = "vagrant"
  ssh_timeout  = "45m"

  shutdown_command = "echo 'vagrant' | sudo -S /sbin/halt -h -p"

  guest_additions_mode = "upload"
  vboxmanage = [
    ["modifyvm", "{{ .Name }}", "--audio", "none"],
    ["modifyvm", "{{ .Name }}", "--usb", "off"],
    ["modifyvm", "{{ .Name }}", "--nat-localhostreachable1", "on"],
  ]
  format           = "ovf"
  output_directory = "output-rocky9"
}

build {
  sources = ["source.virtualbox-iso.rocky9"]

  provisioner "shell" {
    execute_command = "echo 'vagrant' | sudo -S sh -c '{{ .Vars }} {{ .Path }}'"
    scripts = [
      "scripts/guest-additions.sh",
      "scripts/vagrant.sh",
      "scripts/cleanup.sh",
    ]
    expect_disconnect = true
  }

  post-processors {
    post-processor "vagrant" {
      output            = "boxes/rocky9-${var.box_version}-{{ .Provider }}.box"
      compression_level = 6
    }
    post-processor "vagrant-cloud" {
      box_tag             = "acme/rocky9"
      version             = var.box_version
      access_token        = var.vagrant_cloud_token
      version_description = "Rocky Linux ${var.box_version} with VirtualBox guest additions"
      no_release          = true
    }
  }

  post-processor "checksum" {
    checksum_types = ["sha256", "sha512"]
    output         = "output-rocky9/rocky9-${var.box_version}.{{ .ChecksumType }}"
  }
}
