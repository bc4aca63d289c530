<#
.SYNOPSIS
    One round of Windows Update: search, download, install, and report whether a reboot is needed.

.DESCRIPTION
    imgbake's `windows_update` step runs this script elevated (the Windows Update API refuses network
    logons such as SSH sessions), reboots the machine when the result says so, and runs it again until
    nothing is left to install. It can also run on its own, from an elevated PowerShell:

        powershell -NoProfile -ExecutionPolicy Bypass -File windows-update.ps1 -Exclude '*Preview*'

    It never reboots the machine itself. When a reboot is already pending it installs nothing and asks
    for the reboot first (installing on top of a pending reboot often fails).

    The last line of its output is the machine-readable result:

        imgbake-windows-update: {"found":N,"installed":N,"failed":N,"reboot_required":true|false,"failed_titles":[...]}

    Exit code: 0 when the round ran (updates that failed are listed in the result), 1 when the round
    itself failed (the Windows Update service is unreachable, the search failed...).

.PARAMETER SearchCriteria
    Windows Update search criteria (IUpdateSearcher::Search syntax).

.PARAMETER Exclude
    Title patterns (-like wildcards) of updates to skip.
#>
[CmdletBinding()]
param(
    [string]$SearchCriteria = 'IsInstalled=0 and IsHidden=0',
    [string[]]$Exclude = @()
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

function Test-RebootPending {
    $keys = @(
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending',
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired'
    )
    foreach ($key in $keys) {
        if (Test-Path -LiteralPath $key) { return $true }
    }
    try {
        $info = New-Object -ComObject 'Microsoft.Update.SystemInfo'
        if ($info.RebootRequired) { return $true }
    } catch {
        Write-Output "Cannot ask Windows Update whether a reboot is required: $_"
    }
    return $false
}

function Write-Result {
    param([int]$Found, [int]$Installed, [bool]$RebootRequired, [string[]]$FailedTitles = @())
    $titles = @($FailedTitles | Where-Object { $_ })
    $result = [ordered]@{
        found           = $Found
        installed       = $Installed
        failed          = $titles.Count
        reboot_required = $RebootRequired
        failed_titles   = $titles
    }
    Write-Output ('imgbake-windows-update: ' + (ConvertTo-Json -InputObject $result -Compress))
}

function Test-Excluded {
    param([string]$Title)
    foreach ($pattern in $Exclude) {
        if ($Title -like $pattern) { return $true }
    }
    return $false
}

try {
    if (Test-RebootPending) {
        Write-Output 'A reboot is pending from earlier changes: reboot first, then search again.'
        Write-Result -Found 0 -Installed 0 -RebootRequired $true
        exit 0
    }

    $session = New-Object -ComObject 'Microsoft.Update.Session'
    $session.ClientApplicationID = 'imgbake'
    $searcher = $session.CreateUpdateSearcher()
    Write-Output "Searching for updates ($SearchCriteria)..."
    $search = $searcher.Search($SearchCriteria)

    $wanted = New-Object -ComObject 'Microsoft.Update.UpdateColl'
    foreach ($update in $search.Updates) {
        if (Test-Excluded -Title $update.Title) {
            Write-Output "Skipping (excluded): $($update.Title)"
            continue
        }
        if ($update.InstallationBehavior.CanRequestUserInput) {
            Write-Output "Skipping (needs user input): $($update.Title)"
            continue
        }
        if (-not $update.EulaAccepted) { $update.AcceptEula() }
        Write-Output "Found: $($update.Title)"
        [void]$wanted.Add($update)
    }

    if ($wanted.Count -eq 0) {
        Write-Output 'No updates to install.'
        Write-Result -Found 0 -Installed 0 -RebootRequired (Test-RebootPending)
        exit 0
    }

    Write-Output "Downloading $($wanted.Count) update(s)..."
    $downloader = $session.CreateUpdateDownloader()
    $downloader.Updates = $wanted
    [void]$downloader.Download()

    $failed = @()
    $ready = New-Object -ComObject 'Microsoft.Update.UpdateColl'
    foreach ($update in $wanted) {
        if ($update.IsDownloaded) {
            [void]$ready.Add($update)
        } else {
            Write-Output "Download failed: $($update.Title)"
            $failed += $update.Title
        }
    }

    $installed = 0
    $rebootRequired = $false
    if ($ready.Count -gt 0) {
        Write-Output "Installing $($ready.Count) update(s)..."
        $installer = $session.CreateUpdateInstaller()
        $installer.Updates = $ready
        $outcome = $installer.Install()
        for ($i = 0; $i -lt $ready.Count; $i++) {
            $title = $ready.Item($i).Title
            # OperationResultCode: 2 succeeded, 3 succeeded with errors, 4 failed, 5 aborted.
            $code = $outcome.GetUpdateResult($i).ResultCode
            if ($code -eq 2 -or $code -eq 3) {
                $installed++
                Write-Output "Installed: $title"
            } else {
                $failed += $title
                Write-Output "Install failed (result code $code): $title"
            }
        }
        $rebootRequired = [bool]$outcome.RebootRequired
    }
    if (-not $rebootRequired) { $rebootRequired = Test-RebootPending }

    Write-Result -Found $wanted.Count -Installed $installed -RebootRequired $rebootRequired -FailedTitles $failed
    exit 0
} catch {
    Write-Output "Windows Update failed: $_"
    exit 1
}
