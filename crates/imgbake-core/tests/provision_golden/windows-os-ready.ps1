$pending = @()
if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') { $pending += 'Component Based Servicing RebootPending' }
if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') { $pending += 'Windows Update RebootRequired' }
$renames = (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name 'PendingFileRenameOperations' -ErrorAction SilentlyContinue).PendingFileRenameOperations
if ($renames) { $pending += 'Session Manager PendingFileRenameOperations' }
if ($pending.Count -gt 0) { Write-Output ('a reboot is pending: ' + ($pending -join ', ')); exit 1 }
$busy = @(Get-Service -ErrorAction SilentlyContinue | Where-Object { $_.Status -eq 'StartPending' -or $_.Status -eq 'StopPending' })
if ($busy.Count -gt 0) { Write-Output ('the boot has not completed: services still starting or stopping: ' + (($busy | ForEach-Object { $_.Name }) -join ', ')); exit 1 }
exit 0