//! `reboot`: restart the machine and wait until it is back and settled, judged by its boot identity
//! (see [`crate::reboot`]).
//!
//! - `command` (default per OS: `shutdown -r now`, `shutdown.exe /r /f /t 0`) runs through the image's
//!   `communicator.execute_command`, so a `sudo` wrapper applies; `method = "platform"` asks the
//!   platform instead (EC2 RebootInstances, QEMU `system_reset`).
//! - `readiness`: a command that must pass before the machine counts as back (e.g. no reboot pending,
//!   cloud-init done).
//! - `settle`: how long the new boot and the readiness command must hold; reboots within it (update
//!   chains) are followed until the machine settles.
//! - `timeout` (default [`REBOOT_TIMEOUT`], 30m, and never more than the step's own `timeout`); a
//!   machine the platform reports stopped or gone fails the wait at once.

use imgbake_config::{Reboot, RebootMethod};

use super::Ctx;
use super::remote::REBOOT_TIMEOUT;
use crate::error::{BuildError, ErrorKind};
use crate::reboot::{RebootError, RebootOptions, reboot};

/// The options a reboot step runs with.
pub(crate) fn options(cx: &Ctx<'_>, r: &Reboot) -> Result<RebootOptions, BuildError> {
    let platform = match r.method {
        RebootMethod::Command => None,
        RebootMethod::Platform => Some(cx.platform.clone().ok_or_else(|| {
            cx.fail(
                ErrorKind::Config,
                format!(
                    "method = \"platform\" but the `{}` builder offers no platform reboot; use method = \"command\"",
                    cx.runner.cx.builder
                ),
            )
        })?),
    };
    Ok(RebootOptions {
        command: r.command.clone(),
        execute_command: cx.image.communicator.execute_command.clone(),
        platform,
        probe: cx.platform.clone(),
        readiness: r.readiness.clone(),
        settle: r.settle.map(|s| s.get()),
        timeout: cx.bounded(r.timeout.map(|t| t.get()).unwrap_or(REBOOT_TIMEOUT)),
        timeout_setting: Some("the reboot step's `timeout` (default 30m)".to_string()),
        ..RebootOptions::default()
    })
}

pub(crate) async fn run(cx: &Ctx<'_>, r: &Reboot) -> Result<(), BuildError> {
    let opts = options(cx, r)?;
    // Reads (and reports) the identity first, recovering a connection lost since the last step.
    cx.boot().await?;
    restart(cx, &opts).await
}

/// Reboot with `opts`, wait until settled, and remember the new boot.
pub(crate) async fn restart(cx: &Ctx<'_>, opts: &RebootOptions) -> Result<(), BuildError> {
    match reboot(cx.comm, opts, &cx.events).await {
        Ok(rep) => {
            cx.events.info(format!(
                "rebooted: boot {} → {} ({} boot{} seen) in {}",
                rep.before,
                rep.after,
                rep.reboots,
                if rep.reboots == 1 { "" } else { "s" },
                super::humantime_short(rep.waited)
            ));
            *cx.runner.boot.lock().await = Some(rep.after);
            Ok(())
        }
        Err(e) => {
            let kind = match &e {
                RebootError::NeverCameBack { .. } | RebootError::NotReady { .. } => ErrorKind::Timeout,
                RebootError::Platform { .. } => ErrorKind::Platform,
                RebootError::CommandRefused { .. } => ErrorKind::Step,
                _ => ErrorKind::Communicator,
            };
            Err(cx.fail(kind, e.to_string()))
        }
    }
}
