#
# Cookbook:: acme_base
# Recipe:: default
#
package node['acme_base']['packages']

template '/etc/chrony.conf' do
  source 'chrony.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(servers: node['acme_base']['ntp_servers'])
  notifies :restart, 'service[chronyd]', :delayed
end

service 'chronyd' do
  action [:enable, :start]
end

file '/etc/motd' do
  content "#{node['acme_base']['motd']} (#{node['acme_base']['environment']})\n"
  mode '0644'
end
