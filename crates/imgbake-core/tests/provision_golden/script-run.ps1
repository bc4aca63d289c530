$env:APP_MODE='prod'; $ProgressPreference = 'SilentlyContinue'; & 'C:/Windows/Temp/imgbake-win-1-script1-0a1b2c3d.ps1'
if ($LASTEXITCODE) { exit $LASTEXITCODE } elseif (-not $?) { exit 1 }