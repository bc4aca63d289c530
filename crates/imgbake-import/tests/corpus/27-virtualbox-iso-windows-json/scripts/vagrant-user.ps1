# Vagrant box conventions: password never expires, UAC off, RDP on.
$ErrorActionPreference = "Stop"

Set-LocalUser -Name vagrant -PasswordNeverExpires $true
Set-ItemProperty -Path "HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System" -Name EnableLUA -Value 0
Set-ItemProperty -Path "HKLM:\System\CurrentControlSet\Control\Terminal Server" -Name fDenyTSConnections -Value 0
Enable-NetFirewallRule -DisplayGroup "Remote Desktop"
