# Unpack the CI agent at the version the template passes in AGENT_VERSION.
$ErrorActionPreference = "Stop"

$version = $env:AGENT_VERSION
$dest = "C:\agent"
New-Item -ItemType Directory -Force -Path $dest | Out-Null

$zip = "$env:TEMP\agent.zip"
Invoke-WebRequest -UseBasicParsing -OutFile $zip `
    -Uri "https://download.agent.example.com/agent/$version/agent-win-x64-$version.zip"
Expand-Archive -Path $zip -DestinationPath $dest -Force
Remove-Item $zip

[Environment]::SetEnvironmentVariable("AGENT_HOME", $dest, "Machine")
Write-Output "Agent $version unpacked to $dest"
