# Install IIS with ASP.NET 4.x and the management console.
$ErrorActionPreference = "Stop"

Install-WindowsFeature -Name Web-Server, Web-Asp-Net45, Web-Mgmt-Console, Web-Http-Redirect -IncludeManagementTools
Remove-Item -Path "C:\inetpub\wwwroot\iisstart.*" -Force -ErrorAction SilentlyContinue
Write-Output "IIS installed (build $env:BUILD_ID)"
