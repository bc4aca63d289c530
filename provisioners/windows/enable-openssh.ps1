<#
.SYNOPSIS
    Installs and enables OpenSSH Server for an imgbake build, opens the firewall for it, and installs
    the host key imgbake pinned and the public key imgbake logs in with.

.DESCRIPTION
    imgbake's aws builder runs this script as EC2 user data (inside <powershell>) on Windows build
    machines, with every parameter filled in. It can also be run by hand, or from another builder's
    first-boot hook, with the same parameters.

    - Windows Server 2019 / Windows 10 1809 and later: the built-in OpenSSH.Server capability.
    - Older Windows: Win32-OpenSSH, downloaded from -OpenSshUrl (a release zip) and installed with its
      install-sshd.ps1.

    The host key is written before sshd first starts, so sshd never presents another key: imgbake
    pins this one and refuses any other. The login key goes to administrators_authorized_keys (the
    file OpenSSH for Windows reads for members of Administrators).

    Runs again safely: every step checks first.
#>
param(
    # The ed25519 host private key, OpenSSH format (-----BEGIN OPENSSH PRIVATE KEY-----).
    [Parameter(Mandatory = $true)][string]$HostPrivateKey,
    # Its public key line (ssh-ed25519 AAAA... comment).
    [Parameter(Mandatory = $true)][string]$HostPublicKey,
    # The public key line imgbake logs in with.
    [Parameter(Mandatory = $true)][string]$AuthorizedKey,
    # Where Win32-OpenSSH comes from on Windows older than Server 2019.
    [string]$OpenSshUrl = 'https://github.com/PowerShell/Win32-OpenSSH/releases/download/v9.5.0.0p1-Beta/OpenSSH-Win64.zip',
    # The port sshd listens on, and the firewall opens.
    [int]$Port = 22
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

function Write-Log([string]$Message) {
    Write-Output "imgbake: $Message"
}

# Only SYSTEM and Administrators may read a key file; sshd refuses keys others can read. SIDs, not
# names, so localized Windows works too.
function Set-KeyFileAcl([string]$Path) {
    & icacls.exe $Path /inheritance:r /grant '*S-1-5-18:F' /grant '*S-1-5-32-544:F' | Out-Null
    if ($LASTEXITCODE -ne 0) {
        throw "icacls failed on $Path with exit code $LASTEXITCODE"
    }
}

# Key files with LF line ends and one final newline, the way OpenSSH writes them.
function Write-KeyFile([string]$Path, [string]$Text) {
    $clean = ($Text -replace "`r`n", "`n").Trim() + "`n"
    [System.IO.File]::WriteAllText($Path, $clean, (New-Object System.Text.UTF8Encoding($false)))
    Set-KeyFileAcl -Path $Path
}

function Install-OpenSshServer {
    if (Get-Service -Name sshd -ErrorAction SilentlyContinue) {
        Write-Log 'OpenSSH Server is installed already'
        return
    }
    $build = [int](Get-CimInstance -ClassName Win32_OperatingSystem).BuildNumber
    if ($build -ge 17763) {
        $capability = Get-WindowsCapability -Online | Where-Object { $_.Name -like 'OpenSSH.Server*' } | Select-Object -First 1
        if (-not $capability) {
            throw 'this Windows has no OpenSSH.Server capability'
        }
        Write-Log "installing the $($capability.Name) capability"
        Add-WindowsCapability -Online -Name $capability.Name | Out-Null
    }
    else {
        Write-Log "installing Win32-OpenSSH from $OpenSshUrl"
        [Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12
        $zip = Join-Path $env:TEMP 'imgbake-OpenSSH.zip'
        Invoke-WebRequest -Uri $OpenSshUrl -OutFile $zip -UseBasicParsing
        Expand-Archive -Path $zip -DestinationPath $env:ProgramFiles -Force
        Remove-Item -Path $zip -Force
        $dir = Get-ChildItem -Path $env:ProgramFiles -Directory -Filter 'OpenSSH*' | Select-Object -First 1
        if (-not $dir) {
            throw "no OpenSSH directory under $env:ProgramFiles after unpacking $OpenSshUrl"
        }
        & powershell.exe -NoProfile -ExecutionPolicy Bypass -File (Join-Path $dir.FullName 'install-sshd.ps1')
        if ($LASTEXITCODE -ne 0) {
            throw "install-sshd.ps1 failed with exit code $LASTEXITCODE"
        }
    }
}

# sshd_config is copied from sshd_config_default at sshd's first start; write it now so the port
# is right from the first start.
function Set-SshdPort([string]$SshDir) {
    $config = Join-Path $SshDir 'sshd_config'
    if (-not (Test-Path -Path $config)) {
        $default = @(
            (Join-Path $env:SystemRoot 'System32\OpenSSH\sshd_config_default'),
            (Join-Path $env:ProgramFiles 'OpenSSH-Win64\sshd_config_default')
        ) | Where-Object { Test-Path -Path $_ } | Select-Object -First 1
        if (-not $default) {
            if ($Port -eq 22) {
                return
            }
            throw 'cannot find sshd_config_default to set the SSH port'
        }
        Copy-Item -Path $default -Destination $config
    }
    $lines = Get-Content -Path $config | Where-Object { $_ -notmatch '^\s*#?\s*Port\s+\d+' }
    Set-Content -Path $config -Value (@("Port $Port") + $lines) -Encoding ascii
}

$sshdWasInstalled = [bool](Get-Service -Name sshd -ErrorAction SilentlyContinue)
Install-OpenSshServer

$sshDir = Join-Path $env:ProgramData 'ssh'
New-Item -ItemType Directory -Force -Path $sshDir | Out-Null

Write-Log 'installing the pinned host key'
Write-KeyFile -Path (Join-Path $sshDir 'ssh_host_ed25519_key') -Text $HostPrivateKey
Write-KeyFile -Path (Join-Path $sshDir 'ssh_host_ed25519_key.pub') -Text $HostPublicKey

Write-Log 'authorizing the build key for Administrators'
Write-KeyFile -Path (Join-Path $sshDir 'administrators_authorized_keys') -Text $AuthorizedKey

Set-SshdPort -SshDir $sshDir

if (-not (Get-NetFirewallRule -Name 'imgbake-sshd' -ErrorAction SilentlyContinue)) {
    Write-Log "opening TCP port $Port in the firewall"
    New-NetFirewallRule -Name 'imgbake-sshd' -DisplayName 'OpenSSH Server (imgbake)' -Enabled True `
        -Direction Inbound -Protocol TCP -Action Allow -LocalPort $Port | Out-Null
}

# Remember how sshd started before, once, so imgbake's sanitize phase can put it back before capture
# (a freshly installed OpenSSH Server starts Manual).
$modeFile = Join-Path $env:ProgramData 'imgbake\sshd-start-mode'
if (-not (Test-Path -Path $modeFile)) {
    New-Item -ItemType Directory -Force -Path (Split-Path -Parent $modeFile) | Out-Null
    $before = if ($sshdWasInstalled) { [string](Get-Service -Name sshd).StartType } else { 'Manual' }
    Set-Content -Path $modeFile -Value $before -Encoding ascii
}
Set-Service -Name sshd -StartupType Automatic
Restart-Service -Name sshd -Force
Write-Log "sshd is running on port $Port"
