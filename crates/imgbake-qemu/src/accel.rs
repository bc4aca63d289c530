//! Choosing the accelerator. `/dev/kvm` existing is not enough: on some hosts (nested, PVM-style
//! virtualisation) QEMU starts with KVM and the guest then hangs forever. So `auto` boots a Linux
//! kernel under KVM until it panics (no root disk), which takes about a second where KVM works; a
//! kernel that does not get there within [`PROBE_TIMEOUT`] means TCG. The answer is cached per host
//! boot (keyed by the host's own boot id), so the probe runs once per host boot, not once per build.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::guarded;

/// How long the probe kernel may take to panic under KVM.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What was decided, and why (for the build's events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    /// Why.
    pub reason: String,
}

/// Can this process open `/dev/kvm` read-write?
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("IMGBAKE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/imgbake")))?;
    Some(base.join("kvm-probe"))
}

fn host_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Decide for `auto`. `kernels`: Linux kernels to probe with, first existing one wins.
pub async fn auto(binary: &str, kernels: &[PathBuf]) -> Choice {
    if !kvm_device_usable() {
        return Choice { accel: "tcg", reason: "/dev/kvm is missing or not accessible".into() };
    }
    let boot = host_boot_id();
    let cache = cache_file();
    if let Some(c) = &cache
        && let Ok(text) = std::fs::read_to_string(c)
        && let Some((id, answer)) = text.trim().split_once(' ')
        && id == boot
        && !boot.is_empty()
    {
        return match answer {
            "kvm" => Choice { accel: "kvm", reason: "KVM runs guests on this host (probed earlier this boot)".into() },
            _ => Choice {
                accel: "tcg",
                reason: "KVM does not run guests on this host (probed earlier this boot)".into(),
            },
        };
    }
    let Some(kernel) = kernels.iter().find(|k| k.is_file()) else {
        return Choice {
            accel: "tcg",
            reason: "no kernel to probe KVM with (set qemu.accelerator = \"kvm\" to use it unprobed)".into(),
        };
    };
    let works = probe(binary, kernel).await;
    if let Some(c) = &cache {
        let _ = std::fs::create_dir_all(c.parent().unwrap_or(Path::new(".")));
        let _ = std::fs::write(c, format!("{boot} {}\n", if works { "kvm" } else { "tcg" }));
    }
    if works {
        Choice { accel: "kvm", reason: format!("KVM ran a probe guest ({})", kernel.display()) }
    } else {
        Choice {
            accel: "tcg",
            reason: format!("/dev/kvm exists but a probe guest did not run under it within {PROBE_TIMEOUT:?}"),
        }
    }
}

/// Boot `kernel` under KVM to its "no root" panic; `true` if QEMU exits cleanly in time.
async fn probe(binary: &str, kernel: &Path) -> bool {
    let mut cmd = guarded(binary);
    cmd.args(["-accel", "kvm", "-cpu", "host", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "none", "-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-append", "panic=-1 loglevel=0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let Ok(mut child) = cmd.spawn() else { return false };
    match tokio::time::timeout(PROBE_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            false
        }
    }
}
