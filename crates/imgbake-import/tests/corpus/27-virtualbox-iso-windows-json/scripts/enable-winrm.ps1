# Run from Autounattend FirstLogonCommands (floppy A:). Opens WinRM over HTTP
# with Basic auth so Packer can connect on the VirtualBox NAT port forward.
Get-NetConnectionProfile | Set-NetConnectionProfile -NetworkCategory Private

winrm quickconfig -q
winrm set winrm/config '@{MaxTimeoutms="1800000"}'
winrm set winrm/config/winrs '@{MaxMemoryPerShellMB="2048"}'
winrm set winrm/config/service '@{AllowUnencrypted="true"}'
winrm set winrm/config/service/auth '@{Basic="true"}'

netsh advfirewall firewall set rule group="Windows Remote Administration" new enable=yes
netsh advfirewall firewall add rule name="WinRM-HTTP" dir=in localport=5985 protocol=TCP action=allow
Set-Service -Name WinRM -StartupType Automatic
Restart-Service -Name WinRM
