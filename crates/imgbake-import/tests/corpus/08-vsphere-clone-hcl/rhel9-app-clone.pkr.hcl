# Clone the RHEL 9 golden template in vCenter, layer the app runtime on top and
# turn the result into a new template for the app team.

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    vsphere = {
      source  = "github.com/hashicorp/vsphere"
      version = ">= 1.2.1"
    }
  }
}

variable "vcenter_server" {
  type    = string
  default = "vcenter.dc1.acme.internal"
}

variable "vcenter_username" {
  type    = string
  default = "svc-packer@vsphere.local"
}

variable "vcenter_password" {
  type        = string
  sensitive   = true
  description = "Password of the vCenter service account; comes from the CI secret store."
}

variable "ssh_password" {
  type      = string
  sensitive = true
}

variable "source_template" {
  type    = string
  default = "templates/rhel-9.3-golden"
}

variable "cpus" {
  type    = number
  default = 2
}

variable "memory_mb" {
  type    = number
  default = 4096
}

variable "linked_clone" {
  type    = bool
  default = true
}

locals {
  build_date = formatdate("YYYYMMDD", timestamp())
  vm_name    = "rhel9-app-${local.build_date}"
}

source "vsphere-clone" "rhel9_app" {
  vcenter_server      = var.vcenter_server
  username            = var.vcenter_username
  password            = var.vcenter_password
  insecure_connection = true

  datacenter = "DC1"
  cluster    = "Compute-01"
  datastore  = "vsanDatastore"
  folder     = "Templates/App"

  template     = var.source_template
  vm_name      = local.vm_name
  linked_clone = var.linked_clone
  network      = "VM Network/app-build-vlan120"
  notes        = "Built by Packer on ${local.build_date} from ${var.source_template}"

  CPUs            = var.cpus
  cpu_cores       = 1
  RAM             = var.memory_mb
  RAM_reserve_all = false

  communicator = "ssh"
  ssh_username = "packer"
  ssh_password = var.ssh_password
  ssh_timeout  = "20m"

  shutdown_command    = "echo '${var.ssh_password}' | sudo -S shutdown -P now"
  convert_to_template = true
}

build {
  sources = ["source.vsphere-clone.rhel9_app"]

  provisioner "shell" {
    execute_command = "echo '${var.ssh_password}' | sudo -S sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = [
      "JAVA_VERSION=17",
      "APP_USER=appsvc",
    ]
    scripts = [
      "scripts/install-runtime.sh",
      "scripts/vmware-cleanup.sh",
    ]
  }

  post-processor "manifest" {
    output = "vsphere-manifest.json"
  }
}
