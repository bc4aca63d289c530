build {
  name        = "linux-templates"
  description = "Ubuntu 22.04 vSphere template from ISO"
  sources     = ["source.vsphere-iso.ubuntu2204"]

  provisioner "shell" {
    execute_command = "echo '${var.build_password}' | sudo -S -E bash '{{ .Path }}'"
    environment_vars = [
      "BUILD_USERNAME=${var.build_username}",
      "BUILD_VERSION=${local.build_version}",
    ]
    scripts = [
      "${path.root}/scripts/updates.sh",
      "${path.root}/scripts/cleanup.sh",
    ]
    expect_disconnect = true
  }

  post-processor "manifest" {
    output     = "manifests/${local.build_version}.json"
    strip_path = true
    strip_time = true
    custom_data = {
      build_version = local.build_version
      vcenter       = var.vcenter_server
      template      = local.vm_name
    }
  }
}
