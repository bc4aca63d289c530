source "vsphere-iso" "ubuntu2204" {
  vcenter_server      = var.vcenter_server
  username            = var.vcenter_username
  password            = var.vcenter_password
  insecure_connection = var.vcenter_insecure

  datacenter = var.datacenter
  cluster    = var.cluster
  datastore  = var.datastore
  folder     = var.folder

  vm_name       = local.vm_name
  notes         = local.notes
  guest_os_type = "ubuntu64Guest"
  firmware      = "efi-secure"

  CPUs                 = var.cpus
  RAM                  = var.memory
  RAM_reserve_all      = false
  disk_controller_type = ["pvscsi"]

  storage {
    disk_size             = var.disk_size_mb
    disk_thin_provisioned = true
  }

  network_adapters {
    network      = var.network
    network_card = "vmxnet3"
  }

  iso_paths      = ["[${var.iso_datastore}] linux/ubuntu/${var.iso_file}"]
  remove_cdrom   = true
  http_directory = "${path.root}/http"
  http_port_min  = 8600
  http_port_max  = 8650

  boot_order = "disk,cdrom"
  boot_wait  = "5s"
  boot_command = [
    "<wait3s>e<wait><down><down><down><end>",
    " autoinstall ds=nocloud-net\\;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/",
    "<wait><F10><wait>",
  ]
  ip_wait_timeout = "30m"

  communicator = "ssh"
  ssh_username = var.build_username
  ssh_password = var.build_password
  ssh_timeout  = "40m"

  shutdown_command    = "echo '${var.build_password}' | sudo -S -E shutdown -P now"
  shutdown_timeout    = "15m"
  convert_to_template = true
}
