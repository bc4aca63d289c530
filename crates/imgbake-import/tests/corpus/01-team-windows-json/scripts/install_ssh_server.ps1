<powershell>
# EC2 user data: install Win32-OpenSSH on Windows Server 2012 R2 so Packer can
# connect with its temporary key pair over SSH.
$ErrorActionPreference = "Stop"
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12

$version   = "v9.5.0.0p1-Beta"
$zipUrl    = "https://github.com/PowerShell/Win32-OpenSSH/releases/download/$version/OpenSSH-Win64.zip"
$zipPath   = "$env:TEMP\OpenSSH-Win64.zip"
$installTo = "$env:ProgramFiles\OpenSSH"

Invoke-WebRequest -Uri $zipUrl -OutFile $zipPath -UseBasicParsing
Add-Type -AssemblyName System.IO.Compression.FileSystem
[System.IO.Compression.ZipFile]::ExtractToDirectory($zipPath, $env:ProgramFiles)
Rename-Item -Path "$env:ProgramFiles\OpenSSH-Win64" -NewName "OpenSSH"

& powershell.exe -ExecutionPolicy Bypass -File "$installTo\install-sshd.ps1"

# Authorize the key pair EC2 launched the instance with (Packer's temporary key).
$sshDir = "$env:ProgramData\ssh"
New-Item -ItemType Directory -Force -Path $sshDir | Out-Null
$key = (New-Object System.Net.WebClient).DownloadString(
    "http://169.254.169.254/latest/meta-data/public-keys/0/openssh-key")
Set-Content -Path "$sshDir\administrators_authorized_keys" -Value $key -Encoding ASCII
icacls.exe "$sshDir\administrators_authorized_keys" /inheritance:r /grant "Administrators:F" /grant "SYSTEM:F"

netsh advfirewall firewall add rule name="OpenSSH-Server-In-TCP" dir=in action=allow protocol=TCP localport=22

Set-Service -Name sshd -StartupType Automatic
Set-Service -Name ssh-agent -StartupType Automatic
Start-Service sshd
</powershell>
