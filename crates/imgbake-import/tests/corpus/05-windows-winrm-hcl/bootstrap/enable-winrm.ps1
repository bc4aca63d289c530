<powershell>
# EC2 user data: expose WinRM over HTTPS with a self-signed certificate so
# Packer (winrm_use_ssl = true, winrm_insecure = true) can connect.
$ErrorActionPreference = "Stop"

Write-Output "Configuring WinRM over HTTPS"
Set-ExecutionPolicy Unrestricted -Scope LocalMachine -Force -ErrorAction Ignore

# Drop any HTTP listener and any listener left over from the AMI.
Remove-Item -Path WSMan:\Localhost\listener\listener* -Recurse -ErrorAction SilentlyContinue

$cert = New-SelfSignedCertificate -CertStoreLocation Cert:\LocalMachine\My -DnsName "packer"
New-Item -Path WSMan:\LocalHost\Listener -Transport HTTPS -Address * `
    -CertificateThumbPrint $cert.Thumbprint -Force | Out-Null

Set-Item -Path WSMan:\localhost\Service\Auth\Basic -Value $true
Set-Item -Path WSMan:\localhost\MaxTimeoutms -Value 1800000
Set-Item -Path WSMan:\localhost\Shell\MaxMemoryPerShellMB -Value 1024

cmd.exe /c netsh advfirewall firewall add rule name="WinRM-HTTPS" dir=in localport=5986 protocol=TCP action=allow
Restart-Service -Name WinRM
Set-Service -Name WinRM -StartupType Automatic
</powershell>
