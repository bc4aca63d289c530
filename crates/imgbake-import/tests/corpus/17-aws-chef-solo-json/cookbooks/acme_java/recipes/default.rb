#
# Cookbook:: acme_java
# Recipe:: default
#
major = node['acme_java']['major_version']

package "java-#{major}-amazon-corretto-headless"

user 'appsvc' do
  system true
  shell '/sbin/nologin'
  manage_home true
  home '/opt/app'
end

file '/etc/profile.d/java.sh' do
  content "export JAVA_HOME=/usr/lib/jvm/java-#{major}-amazon-corretto\n"
  mode '0644'
end
