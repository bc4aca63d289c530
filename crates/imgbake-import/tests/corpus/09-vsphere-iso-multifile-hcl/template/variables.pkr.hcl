// vCenter connection

variable "vcenter_server" {
  type        = string
  description = "FQDN of the vCenter Server."
}

variable "vcenter_username" {
  type    = string
  default = "svc-packer@vsphere.local"
}

variable "vcenter_password" {
  type      = string
  sensitive = true
}

variable "vcenter_insecure" {
  type    = bool
  default = false
}

// Placement

variable "datacenter" {
  type = string
}

variable "cluster" {
  type = string
}

variable "datastore" {
  type = string
}

variable "iso_datastore" {
  type    = string
  default = "iso-library"
}

variable "folder" {
  type    = string
  default = "Templates/Linux"
}

variable "network" {
  type = string
}

// Hardware

variable "cpus" {
  type    = number
  default = 2
}

variable "memory" {
  type    = number
  default = 4096
}

variable "disk_size_mb" {
  type    = number
  default = 40960
}

// Guest

variable "iso_file" {
  type    = string
  default = "ubuntu-22.04.4-live-server-amd64.iso"
}

variable "build_username" {
  type    = string
  default = "packer"
}

variable "build_password" {
  type      = string
  sensitive = true
}

variable "template_labels" {
  type = map(string)
  default = {
    os      = "ubuntu"
    release = "22.04"
  }
}
