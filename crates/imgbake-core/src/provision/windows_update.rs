//! `windows_update`: install Windows updates, rebooting until none are left.
//!
//! Each round runs `provisioners/windows/windows-update.ps1` (built into imgbake) elevated — the
//! Windows Update API refuses network logons — with `search_criteria` and `exclude`. The script installs
//! what it finds and ends with one machine-readable line ([`RESULT_PREFIX`] and JSON). Then:
//!
//! - a reboot is required (or was already pending): reboot (like a `reboot` step, following chains of
//!   reboots until the machine settles) and run another round;
//! - updates were installed without a reboot: run another round (updates unlock other updates);
//! - nothing was found: done.
//!
//! After `max_rounds` (default 10) rounds the step stops with a warning. A round in which every update
//! failed fails the step.

use imgbake_config::{OnReboot, Os, WindowsUpdate};
use serde::Deserialize;

use super::Ctx;
use super::powershell::{DEFAULT_REMOTE_DIR, Run, invocation, run_invocation, script_file};
use super::remote::{Ran, RebootPolicy, remote_join};
use crate::command::quote;
use crate::error::{BuildError, ErrorKind};
use crate::reboot::RebootOptions;

/// The update script, as shipped in `provisioners/windows/`.
pub const SCRIPT: &str = include_str!("../../../../provisioners/windows/windows-update.ps1");

/// The start of the script's result line.
pub const RESULT_PREFIX: &str = "imgbake-windows-update: ";

/// Rounds when `max_rounds` is not set.
pub const DEFAULT_MAX_ROUNDS: u32 = 10;

/// What one round of the script reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RoundResult {
    /// Updates found (after `exclude`).
    pub found: u32,
    /// Updates installed.
    pub installed: u32,
    /// Updates that failed to download or install.
    pub failed: u32,
    /// A reboot is needed before the next round.
    pub reboot_required: bool,
    /// Titles of the failed updates.
    pub failed_titles: Vec<String>,
}

/// Find the result line in the script's output (the last one wins).
pub fn parse_result(output: &str) -> Option<RoundResult> {
    output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(RESULT_PREFIX.trim_end()))
        .and_then(|json| serde_json::from_str(json.trim()).ok())
}

/// The arguments passed to the script.
pub fn arguments(w: &WindowsUpdate) -> String {
    let mut a = String::new();
    if let Some(c) = &w.search_criteria {
        a.push_str(&format!("-SearchCriteria {}", quote(Os::Windows, c)));
    }
    if !w.exclude.is_empty() {
        if !a.is_empty() {
            a.push(' ');
        }
        let list: Vec<String> = w.exclude.iter().map(|e| quote(Os::Windows, e)).collect();
        a.push_str(&format!("-Exclude @({})", list.join(", ")));
    }
    a
}

pub(crate) async fn run(cx: &Ctx<'_>, w: &WindowsUpdate) -> Result<(), BuildError> {
    if cx.os() != Os::Windows {
        return Err(
            cx.fail(ErrorKind::Config, "windows_update runs on Windows machines: set communicator.os = \"windows\"")
        );
    }
    let max_rounds = w.max_rounds.unwrap_or(DEFAULT_MAX_ROUNDS).max(1);
    let dir = DEFAULT_REMOTE_DIR;
    let run = Run {
        scripts: Vec::new(),
        env: Vec::new(),
        execute_command: cx.image.communicator.execute_command.clone(),
        valid: vec![0],
        // Windows Update does not reboot by itself here; if the machine still restarts under a round,
        // the round is simply run again.
        policy: RebootPolicy { expect_reboot: false, on_reboot: OnReboot::Rerun },
        remote_dir: None,
        elevated: true,
    };
    let reboot_opts = RebootOptions {
        execute_command: cx.image.communicator.execute_command.clone(),
        probe: cx.platform.clone(),
        timeout: cx.bounded(super::remote::REBOOT_TIMEOUT),
        ..RebootOptions::default()
    };
    let args = arguments(w);
    let mut installed_total = 0;
    for round in 1..=max_rounds {
        cx.events.info(format!("Windows Update round {round} of at most {max_rounds}"));
        let path = remote_join(dir, &cx.remote_name(&format!("windows-update-{round}"), "ps1"));
        let content = script_file(SCRIPT.as_bytes());
        cx.transfer("uploading windows-update.ps1", || cx.comm.upload_bytes(&content, &path, 0o600)).await?;
        let ran = run_invocation(cx, &run, dir, &invocation(&path, &args), true).await;
        cx.remove_remote(&path, None).await;
        let out = match ran? {
            (Ran::Exited(out), _) => out,
            (Ran::Rebooted | Ran::Rerun, _) => {
                cx.events.warn("the machine rebooted during a Windows Update round; running the round again");
                continue;
            }
        };
        cx.check_exit("windows-update.ps1", &out, &[0])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(result) = parse_result(&text) else {
            return Err(cx.fail(
                ErrorKind::Step,
                format!(
                    "windows-update.ps1 printed no result line (`{}{{...}}`); see its output above",
                    RESULT_PREFIX.trim_end()
                ),
            ));
        };
        installed_total += result.installed;
        if result.failed > 0 {
            cx.events.warn(format!("{} update(s) failed: {}", result.failed, result.failed_titles.join("; ")));
            if result.installed == 0 && !result.reboot_required {
                return Err(cx.fail(
                    ErrorKind::Step,
                    format!(
                        "every update of round {round} failed ({}); nothing left to try",
                        result.failed_titles.join("; ")
                    ),
                ));
            }
        }
        if result.reboot_required {
            cx.events.info(format!("round {round}: {} installed; rebooting", result.installed));
            super::reboot::restart(cx, &reboot_opts).await?;
            continue;
        }
        if result.found == 0 {
            cx.events
                .info(format!("Windows is up to date ({installed_total} update(s) installed in {round} round(s))"));
            return Ok(());
        }
        cx.events.info(format!("round {round}: {} installed, no reboot needed; searching again", result.installed));
    }
    cx.events.warn(format!(
        "stopped after {max_rounds} Windows Update rounds with updates still coming ({installed_total} installed); raise `max_rounds` to go on"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line() {
        let out = "Searching...\r\nimgbake-windows-update: {\"found\":1}\r\nInstalled: KB1\r\n\
                   imgbake-windows-update: {\"found\":2,\"installed\":1,\"failed\":1,\"reboot_required\":true,\"failed_titles\":[\"KB2\"]}\r\n";
        let r = parse_result(out).unwrap();
        assert_eq!(
            r,
            RoundResult { found: 2, installed: 1, failed: 1, reboot_required: true, failed_titles: vec!["KB2".into()] }
        );
        assert_eq!(parse_result("nothing here"), None);
    }

    #[test]
    fn script_arguments_are_quoted() {
        let w = WindowsUpdate {
            search_criteria: Some("IsInstalled=0 and Type='Software'".into()),
            exclude: vec!["*Preview*".into(), "Silverlight*".into()],
            max_rounds: None,
        };
        assert_eq!(
            arguments(&w),
            "-SearchCriteria 'IsInstalled=0 and Type=''Software''' -Exclude @('*Preview*', 'Silverlight*')"
        );
        assert_eq!(arguments(&WindowsUpdate::default()), "");
    }
}
