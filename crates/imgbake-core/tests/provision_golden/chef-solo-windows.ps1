# probe
if ((Get-Command cinc-solo -ErrorAction SilentlyContinue) -or (Test-Path -LiteralPath 'C:/cinc-project/cinc/bin/cinc-solo.bat')) { exit 0 } else { exit 1 }
# install
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12; . { Invoke-WebRequest -UseBasicParsing -Uri 'https://omnitruck.cinc.sh/install.ps1' } | Invoke-Expression; install -project cinc
# run
$c = (Get-Command cinc-solo -ErrorAction SilentlyContinue).Source; if (-not $c) { $c = 'C:/cinc-project/cinc/bin/cinc-solo.bat' }; & $c --no-color --config 'C:/Windows/Temp/imgbake-chef/solo.rb' --json-attributes 'C:/Windows/Temp/imgbake-chef/imgbake-win-1-attributes-0a1b2c3d.json'
