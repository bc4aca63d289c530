$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$hostPub = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9'
$loginKeys = @('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab')
$sshDir = Join-Path $env:ProgramData 'ssh'

function Get-KeyPart([string]$Line) { (($Line.Trim() -split '\s+') | Select-Object -First 2) -join ' ' }

# Overwrite, then delete: the bytes must not stay in the disk's free clusters.
function Remove-Wiped([string]$Path) {
    $item = Get-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    if (-not $item -or $item.PSIsContainer -or ($item.Attributes -band [IO.FileAttributes]::ReparsePoint)) { return }
    $stream = [IO.File]::Open($item.FullName, 'Open', 'Write')
    try { $stream.Write((New-Object byte[] $item.Length), 0, $item.Length); $stream.Flush($true) } finally { $stream.Close() }
    Remove-Item -LiteralPath $item.FullName -Force
    Write-Output "sanitize: removed $($item.FullName)"
}

$ours = @()
$candidates = @(Get-ChildItem -LiteralPath $sshDir -Filter 'ssh_host_*_key.pub' -File -ErrorAction SilentlyContinue | ForEach-Object { $_.FullName })
$candidates += @(@('C:\ProgramData\ssh\ssh_host_ed25519_key') | ForEach-Object { "$_.pub" })
foreach ($pub in $candidates) {
    if ($hostPub -and (Test-Path -LiteralPath $pub -PathType Leaf) -and ((Get-KeyPart (Get-Content -LiteralPath $pub -Raw)) -eq $hostPub)) {
        $ours += $pub.Substring(0, $pub.Length - 4)
    }
}
if ($ours.Count -eq 0) {
    Write-Output 'sanitize: no host key of this build on the machine; nothing to clean'
    exit 0
}
# The build's host keys (sshd makes new ones when it next starts without any).
foreach ($key in $ours) { Remove-Wiped $key; Remove-Wiped "$key.pub" }

# The build's login keys: administrators_authorized_keys and every user's authorized_keys.
$authFiles = @(Join-Path $sshDir 'administrators_authorized_keys')
$authFiles += @(Get-ChildItem -Path (Join-Path $env:SystemDrive 'Users\*\.ssh\authorized_keys') -File -Force -ErrorAction SilentlyContinue | ForEach-Object { $_.FullName })
foreach ($file in $authFiles) {
    if (-not (Test-Path -LiteralPath $file -PathType Leaf)) { continue }
    $lines = @(Get-Content -LiteralPath $file)
    $keep = @($lines | Where-Object { $line = $_; -not ($loginKeys | Where-Object { $line.Contains($_) }) })
    if ($keep.Count -eq $lines.Count) { continue }
    if ($keep.Count -eq 0) { Remove-Wiped $file }
    else {
        $acl = Get-Acl -LiteralPath $file
        Set-Content -LiteralPath $file -Value $keep -Encoding ascii
        Set-Acl -LiteralPath $file -AclObject $acl
    }
    Write-Output "sanitize: removed the build's login key from $file"
}

# The firewall rule the user data opened for sshd.
if (Get-NetFirewallRule -Name 'imgbake-sshd' -ErrorAction SilentlyContinue) {
    Remove-NetFirewallRule -Name 'imgbake-sshd'
    Write-Output 'sanitize: removed the firewall rule imgbake-sshd'
}

# sshd's start mode as it was before the user data made it Automatic.
$modeFile = 'C:\ProgramData\imgbake\sshd-start-mode'
if (Test-Path -LiteralPath $modeFile -PathType Leaf) {
    $mode = (Get-Content -LiteralPath $modeFile -Raw).Trim()
    if (@('Automatic', 'Manual', 'Disabled') -contains $mode) {
        Set-Service -Name sshd -StartupType $mode
        Write-Output "sanitize: sshd starts $mode again"
    }
    Remove-Item -LiteralPath $modeFile -Force
}

# Copies of the user data (EC2Launch, EC2Config, temp folders), which hold the build's private host key.
$roots = @(
    (Join-Path $env:ProgramData 'Amazon'),
    (Join-Path $env:ProgramFiles 'Amazon'),
    (Join-Path $env:SystemRoot 'Temp'),
    (Join-Path $env:SystemRoot 'System32\config\systemprofile\AppData\Local\Temp')
)
foreach ($root in $roots) {
    Get-ChildItem -LiteralPath $root -Recurse -File -Force -ErrorAction SilentlyContinue |
        Where-Object { $_.Length -lt 16777216 } |
        Where-Object { Select-String -LiteralPath $_.FullName -SimpleMatch -Pattern $hostPub -Quiet -ErrorAction SilentlyContinue } |
        ForEach-Object { Remove-Wiped $_.FullName }
}

# What the builder installed, PowerShell history, sshd's log.
foreach ($f in @('C:\Windows\Temp\imgbake-o''brien.txt')) { Remove-Wiped $f }
Get-ChildItem -Path (Join-Path $env:SystemDrive 'Users\*\AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\*_history.txt') -File -Force -ErrorAction SilentlyContinue |
    ForEach-Object { Remove-Wiped $_.FullName }
Remove-Wiped (Join-Path $sshDir 'logs\sshd.log')
exit 0
