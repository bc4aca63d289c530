# Loaded automatically because it sits in the template directory and ends in
# .auto.pkrvars.hcl. Explicit -var-file and -var values override these.
vcenter_insecure = true
folder           = "Templates/Linux"
cpus             = 2
memory           = 4096
template_labels = {
  os      = "ubuntu"
  release = "22.04"
  owner   = "platform-infra"
}
