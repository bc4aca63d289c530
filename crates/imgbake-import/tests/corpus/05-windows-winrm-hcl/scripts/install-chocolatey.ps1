# Install a pinned Chocolatey and the tools every Acme Windows host carries.
$ErrorActionPreference = "Stop"
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12

$env:chocolateyVersion = $env:CHOCO_VERSION
Invoke-Expression ((New-Object System.Net.WebClient).DownloadString("https://community.chocolatey.org/install.ps1"))

choco feature enable -n allowGlobalConfirmation
choco install -y 7zip notepadplusplus awscli
