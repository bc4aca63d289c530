default['acme_base']['environment'] = 'dev'
default['acme_base']['ntp_servers'] = ['169.254.169.123']
default['acme_base']['motd'] = 'Acme host - managed by Chef'
default['acme_base']['packages'] = %w(chrony jq htop amazon-cloudwatch-agent)
