//! Running things on the machine from a step, aware of reboots.
//!
//! Before each remote command the runner reads the machine's boot identity. When the connection breaks
//! under a command (no exit status, or the next operation finds the machine gone) it calls
//! [`crate::reboot::recover`], which reconnects and compares identities:
//!
//! - a new identity: the machine rebooted. With `expect_reboot = true` that is how the step succeeds;
//!   otherwise `on_reboot` decides — `continue` (the step counts as done), `rerun` (run it again from
//!   the start), `fail` (the default);
//! - the same identity: a network drop. The command's outcome is unknown, so the step fails (and its
//!   `retries` run it again), except with `expect_reboot`, where imgbake keeps waiting for the reboot.
//!
//! With `expect_reboot = true` a command that exits normally (with a valid code) is also followed by a
//! wait for the new boot identity: the script may have scheduled the reboot (`shutdown -r +0`), and
//! the next step must not run on a machine that is going down.

use std::time::Duration;

use imgbake_config::{OnReboot, Os, StepKind};

use super::{Ctx, humantime_short};
use crate::command::quote;
use crate::communicator::{BootIdentity, CommError, ExecOutput, ExecRequest, ExecStatus};
use crate::error::{BuildError, ErrorKind};
use crate::reboot::{RebootOptions, Recovery, recover};
use crate::wait::{self, Poll, Wait, WaitError};

/// How long to wait for a machine to come back after a reboot during a step, when the step has no
/// timeout of its own (the default of the `reboot` step): the one default,
/// [`crate::reboot::DEFAULT_REBOOT_TIMEOUT`].
pub const REBOOT_TIMEOUT: Duration = crate::reboot::DEFAULT_REBOOT_TIMEOUT;

/// What a reboot during a command means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebootPolicy {
    /// The command reboots the machine: a new boot identity is success.
    pub expect_reboot: bool,
    /// What an unexpected reboot means.
    pub on_reboot: OnReboot,
}

/// How a guarded command ended.
#[derive(Debug)]
pub(crate) enum Ran {
    /// It exited (any code: the caller judges it).
    Exited(ExecOutput),
    /// The machine rebooted and that counts as done (`expect_reboot`, or `on_reboot = "continue"`).
    Rebooted,
    /// The machine rebooted and `on_reboot = "rerun"`.
    Rerun,
}

impl Ctx<'_> {
    /// Options for finding out what an unplanned disconnect was. Nobody asked for a reboot, so the
    /// wait is bounded by `communicator.timeout` when it is set (how long SSH may stay unreachable),
    /// else by the reboot timeout; and by the step's `timeout` in either case.
    fn recover_options(&self) -> RebootOptions {
        let (limit, setting) = match self.image.communicator.timeout {
            Some(t) => (t.get(), format!("`communicator.timeout` ({})", humantime_short(t.get()))),
            None => (
                REBOOT_TIMEOUT,
                format!("`communicator.timeout` (unset: the reboot timeout, {})", humantime_short(REBOOT_TIMEOUT)),
            ),
        };
        RebootOptions {
            execute_command: self.image.communicator.execute_command.clone(),
            probe: self.platform.clone(),
            timeout: self.bounded(limit),
            timeout_setting: Some(setting),
            ..RebootOptions::default()
        }
    }

    /// Options for waiting for a reboot somebody asked for (`expect_reboot`): the reboot timeout.
    fn expected_reboot_options(&self) -> RebootOptions {
        RebootOptions {
            timeout: self.bounded(REBOOT_TIMEOUT),
            timeout_setting: Some("the step's `timeout`".to_string()),
            ..self.recover_options()
        }
    }

    /// The machine's boot identity now. When the connection is gone (the machine may be rebooting after
    /// the previous step) it is recovered first; a reboot between steps is reported, not an error.
    pub async fn boot(&self) -> Result<BootIdentity, BuildError> {
        let (prev, id) = self.observe_boot().await?;
        if let Some(prev) = prev
            && prev != id
        {
            self.events.warn(format!(
                "the machine rebooted between steps (boot {prev} → {id}); it is back, going on with {}",
                self.label
            ));
        }
        Ok(id)
    }

    /// The boot identity last seen and the one now (recovering the connection first when it is gone:
    /// a machine that rebooted is waited for until it settled), remembering the new one.
    pub(crate) async fn observe_boot(&self) -> Result<(Option<BootIdentity>, BootIdentity), BuildError> {
        let mut last = self.runner.boot.lock().await;
        let first = match self.comm.boot_identity().await {
            Ok(id) => Ok(id),
            Err(e) if e.is_not_up() => Err(e),
            Err(e) => return Err(self.comm_fail("reading the boot identity", &e)),
        };
        let id = match (first, last.clone()) {
            (Ok(id), _) => id,
            (Err(e), Some(known)) => {
                self.events.info(format!("the connection is gone ({e}); reconnecting"));
                match recover(self.comm, &known, &self.recover_options(), &self.events).await {
                    Ok(Recovery::NetworkDrop { boot_id }) => boot_id,
                    Ok(Recovery::Rebooted { to, .. }) => to,
                    Err(e) => {
                        return Err(self.fail(ErrorKind::Communicator, format!("the machine did not come back: {e}")));
                    }
                }
            }
            (Err(_), None) => {
                let wait = Wait::new(self.bounded(REBOOT_TIMEOUT))
                    .interval(Duration::from_millis(100), Duration::from_secs(2));
                self.comm.connect(&wait).await.map_err(|e| self.comm_fail("connecting", &e))?;
                self.comm.boot_identity().await.map_err(|e| self.comm_fail("reading the boot identity", &e))?
            }
        };
        let prev = last.replace(id.clone());
        Ok((prev, id))
    }

    async fn set_boot(&self, id: BootIdentity) {
        *self.runner.boot.lock().await = Some(id);
    }

    /// Run `req` (its timeout bounded by the step's), following reboots as `policy` says. `valid` are the
    /// exit codes that count as success (a failed command is never followed by a reboot wait).
    pub(crate) async fn exec_guarded(
        &self,
        req: &ExecRequest,
        policy: RebootPolicy,
        valid: &[i32],
    ) -> Result<Ran, BuildError> {
        let known = self.boot().await?;
        let mut req = req.clone();
        req.timeout = match (req.timeout, self.remaining()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let lost = match self.comm.exec(&req, &self.events).await {
            Ok(out) if out.status != ExecStatus::ConnectionLost => {
                let ok = matches!(out.status, ExecStatus::Exited(c) if valid.contains(&c));
                if policy.expect_reboot && ok {
                    self.events.info("the command ended; waiting for the machine to reboot (expect_reboot = true)");
                    self.await_reboot(&known).await?;
                    return Ok(Ran::Rebooted);
                }
                return Ok(Ran::Exited(out));
            }
            Ok(_) => "the connection was lost before the command's exit status arrived".to_string(),
            Err(e) if e.is_not_up() => e.to_string(),
            Err(CommError::Timeout { after, .. }) => {
                // The step's deadline cut it short, or the request's own limit did.
                return Err(match (self.step.timeout, self.remaining()) {
                    (Some(t), Some(left)) if left < Duration::from_millis(100) => self.timed_out(t.get()),
                    _ => {
                        self.fail(ErrorKind::Timeout, format!("the command timed out after {}", humantime_short(after)))
                    }
                });
            }
            Err(e) => return Err(self.comm_fail("running the command", &e)),
        };
        self.events.info(format!("{lost}; checking whether the machine rebooted"));
        match recover(self.comm, &known, &self.recover_options(), &self.events).await {
            Ok(Recovery::Rebooted { from, to, .. }) => {
                self.set_boot(to.clone()).await;
                self.after_reboot(policy, &from, &to)
            }
            Ok(Recovery::NetworkDrop { .. }) if policy.expect_reboot => {
                self.await_reboot(&known).await?;
                Ok(Ran::Rebooted)
            }
            Ok(Recovery::NetworkDrop { boot_id }) => Err(self.fail(
                ErrorKind::Communicator,
                format!(
                    "the connection to {} dropped during the command, but the machine did not reboot (still boot \
                     {boot_id}); the command's outcome is unknown. Set `retries` to run the step again after such drops",
                    self.comm.target()
                ),
            )),
            Err(e) => Err(self.fail(ErrorKind::Communicator, format!("the machine did not come back after the connection was lost: {e}"))),
        }
    }

    fn after_reboot(&self, policy: RebootPolicy, from: &BootIdentity, to: &BootIdentity) -> Result<Ran, BuildError> {
        if policy.expect_reboot {
            self.events.info(format!("the machine rebooted as expected (boot {from} → {to})"));
            return Ok(Ran::Rebooted);
        }
        // A step that did not choose `on_reboot` is run again when it is idempotent: its run on a
        // boot that ended under it must not count as done.
        let chosen = match &self.step.kind {
            StepKind::Shell(s) => s.on_reboot.is_some(),
            StepKind::Powershell(p) => p.on_reboot.is_some(),
            _ => true,
        };
        let on_reboot = if !chosen && self.step.is_idempotent() { OnReboot::Rerun } else { policy.on_reboot };
        match on_reboot {
            OnReboot::Continue => {
                self.events.warn(format!(
                    "the machine rebooted during the step (boot {from} → {to}); counting the step as done (on_reboot = \"continue\")"
                ));
                Ok(Ran::Rebooted)
            }
            OnReboot::Rerun => {
                let why = if chosen { "on_reboot = \"rerun\"" } else { "the step is idempotent" };
                self.events.warn(format!("the machine rebooted during the step (boot {from} → {to}); {why}"));
                Ok(Ran::Rerun)
            }
            OnReboot::Fail => Err(self.fail(
                ErrorKind::Step,
                format!(
                    "the machine rebooted during the step (boot {from} → {to}), so the step is not done. If the \
                     script reboots the machine, set `expect_reboot = true`; `idempotent = true` (or `on_reboot = \
                     \"rerun\"`) runs the step again after an unexpected reboot, `on_reboot = \"continue\"` counts it \
                     as done"
                ),
            )),
        }
    }

    /// Wait until the machine runs a boot other than `known` and has settled (`expect_reboot`).
    async fn await_reboot(&self, known: &BootIdentity) -> Result<(), BuildError> {
        let limit = self.bounded(REBOOT_TIMEOUT);
        let wait = Wait::new(limit).interval(Duration::from_millis(250), Duration::from_secs(3));
        let r = wait::until_observed(
            &wait,
            "the machine to reboot",
            || async {
                let opts = self.expected_reboot_options();
                match recover(self.comm, known, &opts, &self.events).await {
                    Ok(Recovery::Rebooted { to, .. }) => Poll::Ready(to),
                    Ok(Recovery::NetworkDrop { boot_id }) => {
                        Poll::Pending(format!("still boot {boot_id}: the machine has not gone down yet"))
                    }
                    Err(e) => Poll::Failed(e),
                }
            },
            |s| self.events.state("expected reboot", s),
        )
        .await;
        match r {
            Ok(to) => {
                self.events.info(format!("the machine rebooted as expected (boot {known} → {to})"));
                self.set_boot(to).await;
                Ok(())
            }
            Err(WaitError::TimedOut { .. }) => Err(self.fail(
                ErrorKind::Timeout,
                format!(
                    "expected the machine to reboot (expect_reboot = true) but it still runs boot {known} after {}; \
                     if the script only sometimes reboots, use `on_reboot = \"continue\"` instead",
                    humantime_short(limit)
                ),
            )),
            Err(WaitError::Failed(e)) => {
                Err(self.fail(ErrorKind::Communicator, format!("the machine did not come back after rebooting: {e}")))
            }
        }
    }

    /// Check an exit status against the valid codes.
    pub fn check_exit(&self, what: &str, out: &ExecOutput, valid: &[i32]) -> Result<(), BuildError> {
        match &out.status {
            ExecStatus::Exited(c) if valid.contains(c) => Ok(()),
            ExecStatus::Exited(c) => {
                let valid_txt = if valid == [0] { String::new() } else { format!(" (valid: {valid:?})") };
                Err(self.fail(ErrorKind::Step, format!("{what} exited with code {c}{valid_txt}; see its output above")))
            }
            status => Err(self.fail(ErrorKind::Step, format!("{what} {status}"))),
        }
    }

    /// Run a short housekeeping command (mkdir, rm) quietly, through `execute_command` when given (files
    /// a `sudo` command made need it to be removed); `Err` carries a readable reason.
    pub async fn housekeeping(&self, command: String, execute_command: Option<String>) -> Result<(), String> {
        let req = ExecRequest {
            command,
            execute_command,
            timeout: Some(self.bounded(Duration::from_secs(120))),
            ..ExecRequest::default()
        }
        .captured();
        match self.comm.exec(&req, &self.events).await {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                Err(self.events.redact(&format!(
                    "{}{}",
                    out.status,
                    if err.is_empty() { String::new() } else { format!(": {err}") }
                )))
            }
            Err(e) => Err(self.events.redact(&e.to_string())),
        }
    }

    /// Create `dir` and its parents on the machine.
    pub async fn make_remote_dir(&self, dir: &str) -> Result<(), BuildError> {
        let cmd = match self.os() {
            Os::Linux => format!("mkdir -p {}", quote(Os::Linux, dir)),
            Os::Windows => format!("New-Item -ItemType Directory -Force -Path {} | Out-Null", quote(Os::Windows, dir)),
        };
        self.housekeeping(cmd, None).await.map_err(|e| {
            self.fail(ErrorKind::Communicator, format!("cannot create the directory {dir} on the machine: {e}"))
        })
    }

    /// Remove a file or a directory tree on the machine; failures are warnings (the step's work is done).
    pub async fn remove_remote(&self, path: &str, execute_command: Option<String>) {
        if let Err(e) = self.housekeeping(remove_command(self.os(), path), execute_command).await {
            self.events.warn(format!("could not remove {path} from the machine: {e}"));
        }
    }

    /// Run a transfer; when the connection is gone, recover it once (the machine may have rebooted) and
    /// run it again — uploads and downloads can be repeated safely.
    pub async fn transfer<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, BuildError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CommError>>,
    {
        match op().await {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_up() => {
                self.events.info(format!("{what}: {e}; reconnecting"));
                self.boot().await?;
                op().await.map_err(|e| self.comm_fail(what, &e))
            }
            Err(e) => Err(self.comm_fail(what, &e)),
        }
    }
}

/// The command that removes `path` (file or directory tree) on `os`, quietly.
pub fn remove_command(os: Os, path: &str) -> String {
    match os {
        Os::Linux => format!("rm -rf {}", quote(Os::Linux, path)),
        Os::Windows => format!(
            "Remove-Item -LiteralPath {} -Recurse -Force -ErrorAction SilentlyContinue",
            quote(Os::Windows, path)
        ),
    }
}

/// The parent directory of a remote path (`/` or `\` separated), if it has one.
pub fn remote_parent(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches(['/', '\\']);
    let cut = trimmed.rfind(['/', '\\'])?;
    let parent = &trimmed[..cut];
    if parent.is_empty() {
        return None; // `/file`: the root exists
    }
    // `C:` alone is a drive, not a directory to create.
    if parent.len() == 2 && parent.ends_with(':') {
        return None;
    }
    Some(parent)
}

/// Join a remote directory and a name with the separator the directory uses.
pub fn remote_join(dir: &str, name: &str) -> String {
    let sep = if dir.contains('\\') && !dir.contains('/') { '\\' } else { '/' };
    format!("{}{sep}{name}", dir.trim_end_matches(['/', '\\']))
}

/// Is `path` absolute on `os`?
pub fn remote_is_absolute(os: Os, path: &str) -> bool {
    match os {
        Os::Linux => path.starts_with('/'),
        Os::Windows => {
            let b = path.as_bytes();
            path.starts_with('\\')
                || path.starts_with('/')
                || (b.len() >= 3 && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        assert_eq!(remote_parent("/tmp/a/b.sh"), Some("/tmp/a"));
        assert_eq!(remote_parent("/b.sh"), None);
        assert_eq!(remote_parent("b.sh"), None);
        assert_eq!(remote_parent("/tmp/dir/"), Some("/tmp"));
        assert_eq!(remote_parent("C:/Windows/Temp/x.ps1"), Some("C:/Windows/Temp"));
        assert_eq!(remote_parent("C:\\x.ps1"), None);
        assert_eq!(remote_join("/tmp/", "x"), "/tmp/x");
        assert_eq!(remote_join("C:\\Temp", "x"), "C:\\Temp\\x");
        assert!(remote_is_absolute(Os::Windows, "C:/x"));
        assert!(!remote_is_absolute(Os::Windows, "report.xml"));
        assert!(remote_is_absolute(Os::Linux, "/x"));
    }

    #[test]
    fn remove_commands_quote() {
        assert_eq!(remove_command(Os::Linux, "/tmp/a b"), "rm -rf '/tmp/a b'");
        assert_eq!(
            remove_command(Os::Windows, "C:/it's"),
            "Remove-Item -LiteralPath 'C:/it''s' -Recurse -Force -ErrorAction SilentlyContinue"
        );
    }
}
