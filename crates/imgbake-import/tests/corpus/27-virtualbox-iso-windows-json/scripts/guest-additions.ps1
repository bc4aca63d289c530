# Install VirtualBox Guest Additions from the attached ISO (guest_additions_mode = attach).
$ErrorActionPreference = "Stop"

$drive = Get-Volume | Where-Object { $_.FileSystemLabel -like "VBox_GAs*" } | Select-Object -First 1
if (-not $drive) { throw "Guest Additions ISO not attached" }
$root = "$($drive.DriveLetter):"

Get-ChildItem "$root\cert\vbox*.cer" | ForEach-Object {
    & "$root\cert\VBoxCertUtil.exe" add-trusted-publisher $_.FullName --root $_.FullName
}
Start-Process -FilePath "$root\VBoxWindowsAdditions.exe" -ArgumentList "/S" -Wait
