//! The `sanitize` phase: before capture, clean the machine of what the build put there that must not
//! reach the image — the build's SSH host key (and cloud-init's copies of the user data that carried
//! it), the temporary login key, shell history and the logs of the build.
//!
//! Core runs the phase (after the last step, before the builder captures the disk); the builder says
//! what it installed ([`SanitizeItems`]: the AWS user data knows its host key, the QEMU seed where the
//! guest put its keys). The image opts out with `sanitize = false`.
//!
//! Machine-wide cleaning (history, logs, cloud-init) only happens on a machine that provably runs this
//! build's host key: a host key file on it derives to the build's public key. Anything else (a machine
//! reached some other way) is left alone, so the phase can never wipe a host that is not the build's.
//! Key files are overwritten before they are unlinked (`shred`), so their bytes do not stay in the
//! disk's free blocks.

use std::time::Duration;

use imgbake_config::{Image, Os};

use crate::command::quote;
use crate::communicator::{Communicator, ExecRequest, ExecStatus};
use crate::error::{BuildError, ErrorKind};
use crate::event::EventSink;

/// How long the phase may take.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Run the phase for `image` on the machine behind `comm`.
pub async fn run(
    events: &EventSink,
    image: &Image,
    comm: &dyn Communicator,
    items: &SanitizeItems,
) -> Result<(), BuildError> {
    if image.sanitize == Some(false) {
        events.info("not sanitizing the machine before capture (sanitize = false)");
        return Ok(());
    }
    if items.host_public_key.is_none() {
        // Nothing to recognise the build's machine by, so the script would touch nothing anyway.
        events.info("not sanitizing: the builder installed no host key of this build to recognise the machine by");
        return Ok(());
    }
    let command = match comm.os() {
        Os::Linux => {
            events.info("sanitizing the machine before capture (host key, login key, cloud-init data, history, logs)");
            linux_script(items)
        }
        Os::Windows => {
            events.info(
                "sanitizing the machine before capture (host key, login key, firewall rule, sshd start mode, user data copies, history)",
            );
            windows_script(items)
        }
    };
    let req = ExecRequest {
        command,
        execute_command: image.communicator.execute_command.clone(),
        timeout: Some(TIMEOUT),
        ..ExecRequest::default()
    }
    .captured();
    let fail = |why: String| {
        BuildError::new(
            ErrorKind::Step,
            events.redact(&format!(
                "sanitizing the machine before capture failed: {why}. It runs as root through                  communicator.execute_command (e.g. `sudo -n sh -c {{{{quote command}}}}`); set `sanitize = false`                  on the image to skip it"
            )),
        )
    };
    let out = comm.exec(&req, &EventSink::discard()).await.map_err(|e| fail(e.to_string()))?;
    for line in out.stdout_text().lines().filter(|l| !l.trim().is_empty()) {
        events.info(line.to_string());
    }
    match out.status {
        ExecStatus::Exited(0) => Ok(()),
        status => Err(fail(format!("{status}: {}", String::from_utf8_lossy(&out.stderr).trim()))),
    }
}

/// What a builder installed on the machine for the build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SanitizeItems {
    /// The build's host public key (`ssh-ed25519 AAAA…`, comment optional).
    pub host_public_key: Option<String>,
    /// Where the builder put the build's private host key (besides `/etc/ssh/ssh_host_*_key`).
    pub host_key_files: Vec<String>,
    /// The build's temporary login keys (`ssh-ed25519 AAAA…`), to remove from `authorized_keys`.
    pub authorized_keys: Vec<String>,
    /// Other files the builder installed (overwritten and removed when present).
    pub files: Vec<String>,
}

fn key_part(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// The `sh` script that sanitizes a Linux machine (run as root, through the image's `execute_command`).
/// It prints one line per thing it cleaned.
pub fn linux_script(items: &SanitizeItems) -> String {
    let q = |s: &str| quote(Os::Linux, s);
    let host = items.host_public_key.as_deref().map(key_part).unwrap_or_default();
    let mut host_files = String::from("/etc/ssh/ssh_host_*_key");
    for f in &items.host_key_files {
        host_files.push(' ');
        host_files.push_str(&q(f));
    }
    let auth: Vec<String> = items.authorized_keys.iter().map(|k| q(&key_part(k))).collect();
    let files: Vec<String> = items.files.iter().map(|f| q(f)).collect();
    format!(
        r#"set -u
hostpub={host}
PATH=$PATH:/usr/sbin:/sbin
# Overwrite, then unlink: the bytes must not stay in the disk's free blocks.
wipe() {{
  for f in "$@"; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    if command -v shred >/dev/null 2>&1; then shred -z -u -- "$f"
    else dd if=/dev/zero of="$f" bs=4096 count=$(( ($(wc -c <"$f") + 4095) / 4096 )) conv=notrunc 2>/dev/null; sync; rm -f -- "$f"
    fi
    echo "sanitize: removed $f"
  done
}}
pub_of() {{
  if [ -f "$1.pub" ]; then cut -d' ' -f1,2 "$1.pub"; else ssh-keygen -y -f "$1" 2>/dev/null | cut -d' ' -f1,2; fi
}}
ours=
for f in {host_files}; do
  [ -n "$hostpub" ] && [ -f "$f" ] || continue
  if [ "$(pub_of "$f")" = "$hostpub" ]; then ours="$ours $f"; fi
done
if [ -z "$ours" ]; then
  echo "sanitize: no host key of this build on the machine; nothing to clean"
  exit 0
fi
# The build's host keys (sshd gets new ones at the next boot: cloud-init, ssh-keygen -A, the seed).
for f in $ours; do wipe "$f" "$f.pub"; done
# cloud-init's copies of the user data, which hold the build's private host key.
for f in $(grep -rlF -- "$hostpub" /var/lib/cloud 2>/dev/null); do wipe "$f"; done
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init clean --logs >/dev/null 2>&1 && echo "sanitize: cloud-init clean --logs"
else
  rm -rf /var/lib/cloud/instance /var/lib/cloud/instances
fi
wipe /var/log/cloud-init.log /var/log/cloud-init-output.log
# The build's temporary login keys.
for k in {auth}; do
  for ak in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do
    [ -f "$ak" ] && [ ! -L "$ak" ] && grep -qF -- "$k" "$ak" || continue
    keep=$(grep -vF -- "$k" "$ak" || true)
    # Zero the file in place (same blocks) before it gets its shorter content.
    dd if=/dev/zero of="$ak" bs=4096 count=$(( ($(wc -c <"$ak") + 4095) / 4096 )) conv=notrunc 2>/dev/null; sync
    if [ -n "$keep" ]; then printf '%s\n' "$keep" >"$ak"; else rm -f -- "$ak"; fi
    echo "sanitize: removed the build's login key from $ak"
  done
done
# What the builder installed, shell history, the build's logs.
wipe {files} /root/.bash_history /root/.ash_history /root/.zsh_history /root/.lesshst /home/*/.bash_history /home/*/.ash_history /home/*/.zsh_history
if command -v journalctl >/dev/null 2>&1; then
  journalctl --rotate >/dev/null 2>&1; journalctl --vacuum-time=1s >/dev/null 2>&1 && echo "sanitize: emptied the journal"
fi
sync
"#,
        host = q(&host),
        auth = if auth.is_empty() { "''".to_string() } else { auth.join(" ") },
        files = files.join(" "),
    )
}

/// Where the OpenSSH user data (`enable-openssh.ps1`) records the start mode sshd had before it set
/// `Automatic`, for the Windows clean-up to restore.
pub const WINDOWS_SSHD_START_MODE_FILE: &str = r"C:\ProgramData\imgbake\sshd-start-mode";

/// The PowerShell script that sanitizes a Windows machine (run elevated, as the build's login is an
/// administrator). It undoes what the OpenSSH user data did — the build's host key, its login key in
/// `administrators_authorized_keys`, the `imgbake-sshd` firewall rule, sshd's start mode — and wipes
/// copies of the user data (found by the host key in them), PowerShell history and sshd's log. It
/// prints one line per thing it cleaned, and acts only on a machine that runs the build's host key.
/// The session it runs in stays up: Windows keeps open connections when a key or rule goes.
pub fn windows_script(items: &SanitizeItems) -> String {
    let q = |s: &str| quote(Os::Windows, s);
    let host = items.host_public_key.as_deref().map(key_part).unwrap_or_default();
    let list = |v: Vec<String>| if v.is_empty() { "@()".to_string() } else { format!("@({})", v.join(", ")) };
    let auth = list(items.authorized_keys.iter().map(|k| q(&key_part(k))).collect());
    let host_files = list(items.host_key_files.iter().map(|f| q(f)).collect());
    let files = list(items.files.iter().map(|f| q(f)).collect());
    format!(
        r#"$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$hostPub = {host}
$loginKeys = {auth}
$sshDir = Join-Path $env:ProgramData 'ssh'

function Get-KeyPart([string]$Line) {{ (($Line.Trim() -split '\s+') | Select-Object -First 2) -join ' ' }}

# Overwrite, then delete: the bytes must not stay in the disk's free clusters.
function Remove-Wiped([string]$Path) {{
    $item = Get-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    if (-not $item -or $item.PSIsContainer -or ($item.Attributes -band [IO.FileAttributes]::ReparsePoint)) {{ return }}
    $stream = [IO.File]::Open($item.FullName, 'Open', 'Write')
    try {{ $stream.Write((New-Object byte[] $item.Length), 0, $item.Length); $stream.Flush($true) }} finally {{ $stream.Close() }}
    Remove-Item -LiteralPath $item.FullName -Force
    Write-Output "sanitize: removed $($item.FullName)"
}}

$ours = @()
$candidates = @(Get-ChildItem -LiteralPath $sshDir -Filter 'ssh_host_*_key.pub' -File -ErrorAction SilentlyContinue | ForEach-Object {{ $_.FullName }})
$candidates += @({host_files} | ForEach-Object {{ "$_.pub" }})
foreach ($pub in $candidates) {{
    if ($hostPub -and (Test-Path -LiteralPath $pub -PathType Leaf) -and ((Get-KeyPart (Get-Content -LiteralPath $pub -Raw)) -eq $hostPub)) {{
        $ours += $pub.Substring(0, $pub.Length - 4)
    }}
}}
if ($ours.Count -eq 0) {{
    Write-Output 'sanitize: no host key of this build on the machine; nothing to clean'
    exit 0
}}
# The build's host keys (sshd makes new ones when it next starts without any).
foreach ($key in $ours) {{ Remove-Wiped $key; Remove-Wiped "$key.pub" }}

# The build's login keys: administrators_authorized_keys and every user's authorized_keys.
$authFiles = @(Join-Path $sshDir 'administrators_authorized_keys')
$authFiles += @(Get-ChildItem -Path (Join-Path $env:SystemDrive 'Users\*\.ssh\authorized_keys') -File -Force -ErrorAction SilentlyContinue | ForEach-Object {{ $_.FullName }})
foreach ($file in $authFiles) {{
    if (-not (Test-Path -LiteralPath $file -PathType Leaf)) {{ continue }}
    $lines = @(Get-Content -LiteralPath $file)
    $keep = @($lines | Where-Object {{ $line = $_; -not ($loginKeys | Where-Object {{ $line.Contains($_) }}) }})
    if ($keep.Count -eq $lines.Count) {{ continue }}
    if ($keep.Count -eq 0) {{ Remove-Wiped $file }}
    else {{
        $acl = Get-Acl -LiteralPath $file
        Set-Content -LiteralPath $file -Value $keep -Encoding ascii
        Set-Acl -LiteralPath $file -AclObject $acl
    }}
    Write-Output "sanitize: removed the build's login key from $file"
}}

# The firewall rule the user data opened for sshd.
if (Get-NetFirewallRule -Name 'imgbake-sshd' -ErrorAction SilentlyContinue) {{
    Remove-NetFirewallRule -Name 'imgbake-sshd'
    Write-Output 'sanitize: removed the firewall rule imgbake-sshd'
}}

# sshd's start mode as it was before the user data made it Automatic.
$modeFile = {mode_file}
if (Test-Path -LiteralPath $modeFile -PathType Leaf) {{
    $mode = (Get-Content -LiteralPath $modeFile -Raw).Trim()
    if (@('Automatic', 'Manual', 'Disabled') -contains $mode) {{
        Set-Service -Name sshd -StartupType $mode
        Write-Output "sanitize: sshd starts $mode again"
    }}
    Remove-Item -LiteralPath $modeFile -Force
}}

# Copies of the user data (EC2Launch, EC2Config, temp folders), which hold the build's private host key.
$roots = @(
    (Join-Path $env:ProgramData 'Amazon'),
    (Join-Path $env:ProgramFiles 'Amazon'),
    (Join-Path $env:SystemRoot 'Temp'),
    (Join-Path $env:SystemRoot 'System32\config\systemprofile\AppData\Local\Temp')
)
foreach ($root in $roots) {{
    Get-ChildItem -LiteralPath $root -Recurse -File -Force -ErrorAction SilentlyContinue |
        Where-Object {{ $_.Length -lt 16777216 }} |
        Where-Object {{ Select-String -LiteralPath $_.FullName -SimpleMatch -Pattern $hostPub -Quiet -ErrorAction SilentlyContinue }} |
        ForEach-Object {{ Remove-Wiped $_.FullName }}
}}

# What the builder installed, PowerShell history, sshd's log.
foreach ($f in {files}) {{ Remove-Wiped $f }}
Get-ChildItem -Path (Join-Path $env:SystemDrive 'Users\*\AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\*_history.txt') -File -Force -ErrorAction SilentlyContinue |
    ForEach-Object {{ Remove-Wiped $_.FullName }}
Remove-Wiped (Join-Path $sshDir 'logs\sshd.log')
exit 0
"#,
        host = q(&host),
        mode_file = q(WINDOWS_SSHD_START_MODE_FILE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_what_the_builder_names_and_parses_in_sh() {
        let items = SanitizeItems {
            host_public_key: Some("ssh-ed25519 AAAAhost imgbake host key".into()),
            host_key_files: vec!["/run/imgbake/ssh_host_ed25519_key".into()],
            authorized_keys: vec!["ssh-ed25519 AAAAlogin it's me".into()],
            files: vec!["/run/imgbake/authorized_keys/root".into()],
        };
        let s = linux_script(&items);
        assert!(s.contains("hostpub='ssh-ed25519 AAAAhost'"), "{s}");
        assert!(s.contains("for k in 'ssh-ed25519 AAAAlogin'; do"), "{s}");
        let out = std::process::Command::new("sh").arg("-n").arg("-c").arg(&s).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn a_machine_without_the_builds_host_key_is_left_alone() {
        // The host running this test does not run the build's key: the script must stop at once.
        let items = SanitizeItems {
            host_public_key: Some("ssh-ed25519 AAAAnot-this-machine".into()),
            ..SanitizeItems::default()
        };
        let out = std::process::Command::new("sh").arg("-c").arg(linux_script(&items)).output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "sanitize: no host key of this build on the machine; nothing to clean\n"
        );
    }
}
