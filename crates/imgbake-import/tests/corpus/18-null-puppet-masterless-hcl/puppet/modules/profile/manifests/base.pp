# Baseline for every lab host.
class profile::base (
  String        $timezone = 'UTC',
  Array[String] $packages = [],
) {
  package { $packages:
    ensure => installed,
  }

  exec { 'set-timezone':
    command => "/usr/bin/timedatectl set-timezone ${timezone}",
    unless  => "/usr/bin/timedatectl show -p Timezone --value | /bin/grep -qx ${timezone}",
  }

  file { '/etc/lab-role':
    ensure  => file,
    content => "${facts['role']}\n",
    mode    => '0644',
  }
}
