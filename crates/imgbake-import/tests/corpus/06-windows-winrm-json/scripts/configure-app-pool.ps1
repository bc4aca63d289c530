# Create the application pool and site the Acme web tier deploys into.
$ErrorActionPreference = "Stop"
Import-Module WebAdministration

$pool = $env:APP_POOL
if (-not (Test-Path "IIS:\AppPools\$pool")) {
    New-WebAppPool -Name $pool | Out-Null
}
Set-ItemProperty "IIS:\AppPools\$pool" -Name managedRuntimeVersion -Value "v4.0"
Set-ItemProperty "IIS:\AppPools\$pool" -Name processModel.identityType -Value "ApplicationPoolIdentity"

New-Item -ItemType Directory -Force -Path "C:\inetpub\acme" | Out-Null
if (-not (Get-Website -Name "acme")) {
    New-Website -Name "acme" -Port 80 -PhysicalPath "C:\inetpub\acme" -ApplicationPool $pool -Force | Out-Null
}
Stop-Website -Name "Default Web Site" -ErrorAction SilentlyContinue

Copy-Item "C:\ProgramData\Acme\agent-config\*.json" "C:\inetpub\acme\" -Force
