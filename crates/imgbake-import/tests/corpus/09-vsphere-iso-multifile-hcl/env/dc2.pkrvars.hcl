# Datacenter 2 placement. Passwords come from -var in CI, never from this file.
vcenter_server = "vcenter.dc2.acme.internal"
datacenter     = "DC2"
cluster        = "Mgmt-Cluster"
datastore      = "ds-nvme-01"
iso_datastore  = "ds-iso-01"
network        = "DPortGroup-Build-VLAN210"
memory         = 8192
disk_size_mb   = 61440
