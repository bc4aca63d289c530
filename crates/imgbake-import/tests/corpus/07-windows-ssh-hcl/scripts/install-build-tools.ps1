# Visual Studio Build Tools and Git for the CI agent.
$ErrorActionPreference = "Stop"
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12

$bootstrapper = "$env:TEMP\vs_buildtools.exe"
Invoke-WebRequest -Uri "https://aka.ms/vs/17/release/vs_buildtools.exe" -OutFile $bootstrapper -UseBasicParsing
$proc = Start-Process -FilePath $bootstrapper -Wait -PassThru -ArgumentList @(
    "--quiet", "--wait", "--norestart", "--nocache",
    "--add", "Microsoft.VisualStudio.Workload.VCTools",
    "--includeRecommended"
)
if ($proc.ExitCode -ne 0 -and $proc.ExitCode -ne 3010) {
    throw "Build Tools installer failed with $($proc.ExitCode)"
}

winget install --id Git.Git --silent --accept-package-agreements --accept-source-agreements
