# Install the Windows features named in $env:FEATURES (comma separated).
$ErrorActionPreference = "Stop"

$features = $env:FEATURES -split ","
foreach ($feature in $features) {
    Write-Output "Installing feature $feature"
    $result = Install-WindowsFeature -Name $feature.Trim() -IncludeManagementTools
    if (-not $result.Success) {
        throw "Failed to install $feature"
    }
    if ($result.RestartNeeded -eq "Yes") {
        Write-Output "$feature needs a restart"
        $global:restartNeeded = $true
    }
}

if ($global:restartNeeded) {
    # 3010 = ERROR_SUCCESS_REBOOT_REQUIRED; the template lists it in valid_exit_codes.
    exit 3010
}
exit 0
