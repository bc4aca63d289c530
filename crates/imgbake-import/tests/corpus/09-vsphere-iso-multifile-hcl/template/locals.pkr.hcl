locals {
  build_version = formatdate("YY.MM.DD.hhmm", timestamp())
  vm_name       = "tpl-ubuntu-2204-${local.build_version}"
  notes = join("\n", [
    "Ubuntu 22.04 template ${local.build_version}",
    "Labels: ${jsonencode(var.template_labels)}",
  ])
}
