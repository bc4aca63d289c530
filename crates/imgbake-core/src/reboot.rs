//! Reboots and unplanned disconnects, for any [`Communicator`], judged by the machine's boot identity
//! rather than by timers.
//!
//! - [`reboot`]: read the identity, issue the reboot (a command, or a [`PlatformReboot`] such as EC2's
//!   RebootInstances), then wait until the identity has changed, the readiness command passes, and
//!   both stay so for the settle window. A login that still shows the old identity is a machine that
//!   has not gone down yet: it is dropped, never taken for "back". Reboots that follow one another
//!   (update chains) are counted and followed until the machine settles.
//! - [`recover`]: after a connection broke during a step, reconnect and tell a reboot
//!   ([`Recovery::Rebooted`], then settled) from a network drop ([`Recovery::NetworkDrop`]).
//!
//! Every wait goes through [`crate::wait`]; polls are capped at [`RebootOptions::poll_max`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imgbake_config::Os;
use tokio::time::Instant;

use crate::command::{compose, default_reboot_command};
use crate::communicator::{BootIdentity, CommError, Communicator, ExecRequest, ExecStatus};
use crate::event::{EventKind, EventSink};
use crate::wait::{self, Poll, Wait, WaitError};

/// How long to wait for a machine to come back after a reboot, unless a `timeout` says otherwise: the
/// one default for the `reboot` step, `expect_reboot` and [`RebootOptions`]. Long enough for a
/// Windows update reboot; a machine the platform reports stopped or gone fails at once instead
/// ([`PlatformReboot::machine_state`]).
pub const DEFAULT_REBOOT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How often the wait for a machine shows progress and asks the platform whether it still runs.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What "ready" means after a reboot on Linux when no `readiness` command is given: what the OS says
/// about itself. With systemd (detected by `/run/systemd/system`, as `sd_booted` does): the boot has
/// finished (`systemctl is-system-running --wait` says `running` or `degraded`; `starting`,
/// `stopping` and the rest are not ready), no shutdown is scheduled and no shutdown or reboot job is
/// queued. Everywhere: logins are not refused (`/run/nologin`, present while booting or shutting
/// down). Without systemd (busybox) only that last check applies, and the settle window and the
/// runner's boot confirmation between steps do the rest.
pub const LINUX_OS_READY: &str = r#"if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  state=$(systemctl is-system-running --wait 2>/dev/null)
  case "$state" in
    running|degraded) ;;
    *) echo "systemd says the system is ${state:-in an unknown state}"; exit 1 ;;
  esac
  if [ -e /run/systemd/shutdown/scheduled ]; then echo "a shutdown is scheduled (/run/systemd/shutdown/scheduled)"; exit 1; fi
  if systemctl list-jobs --no-legend 2>/dev/null | grep -Eq '(reboot|poweroff|halt|kexec|shutdown)\.target'; then echo "a shutdown or reboot job is queued (systemctl list-jobs)"; exit 1; fi
fi
if [ -e /run/nologin ]; then echo "logins are refused (/run/nologin): the system is starting or shutting down"; exit 1; fi
exit 0"#;

/// What "ready" means after a reboot on Windows when no `readiness` command is given: no reboot is
/// pending (Component Based Servicing `RebootPending`, Windows Update `RebootRequired`, Session
/// Manager `PendingFileRenameOperations`) and the boot has completed (no service is still starting
/// or stopping).
pub const WINDOWS_OS_READY: &str = r#"$pending = @()
if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') { $pending += 'Component Based Servicing RebootPending' }
if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') { $pending += 'Windows Update RebootRequired' }
$renames = (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name 'PendingFileRenameOperations' -ErrorAction SilentlyContinue).PendingFileRenameOperations
if ($renames) { $pending += 'Session Manager PendingFileRenameOperations' }
if ($pending.Count -gt 0) { Write-Output ('a reboot is pending: ' + ($pending -join ', ')); exit 1 }
$busy = @(Get-Service -ErrorAction SilentlyContinue | Where-Object { $_.Status -eq 'StartPending' -or $_.Status -eq 'StopPending' })
if ($busy.Count -gt 0) { Write-Output ('the boot has not completed: services still starting or stopping: ' + (($busy | ForEach-Object { $_.Name }) -join ', ')); exit 1 }
exit 0"#;

/// The readiness check used after every reboot when [`RebootOptions::readiness`] is `None`.
pub fn os_readiness(os: Os) -> &'static str {
    match os {
        Os::Linux => LINUX_OS_READY,
        Os::Windows => WINDOWS_OS_READY,
    }
}

/// What the platform says about the machine while imgbake waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineState {
    /// It exists and runs (or is starting): keep waiting.
    Running,
    /// It is stopped, terminated or gone: it will not come back by itself. The text says what the
    /// platform reported (`EC2 instance i-0abc is stopped`).
    Gone(String),
    /// The platform cannot tell.
    Unknown,
}

/// The platform's view of the machine (EC2, QEMU): a way to reboot it (RebootInstances,
/// `system_reset`), used instead of a command when asked, and a way to tell whether it still runs,
/// polled while waiting for it to come back.
#[async_trait]
pub trait PlatformReboot: Send + Sync {
    /// What it does, for messages (`EC2 RebootInstances i-0abc`).
    fn describe(&self) -> String;

    /// Ask the platform to reboot the machine; returns once the request was accepted.
    async fn reboot(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Is the machine still there and running? Polled every few seconds while SSH is down, so a
    /// machine that powered off fails the wait at once instead of after the whole timeout. Errors
    /// reaching the platform are [`MachineState::Unknown`]. Default: unknown.
    async fn machine_state(&self) -> MachineState {
        MachineState::Unknown
    }
}

/// How to reboot and what "back" means.
#[derive(Clone)]
pub struct RebootOptions {
    /// The reboot command; `None` uses the OS default ([`default_reboot_command`]). It runs through
    /// [`compose`] with [`RebootOptions::execute_command`], so `sudo` wrappers apply.
    pub command: Option<String>,
    /// `execute_command` template for the reboot and readiness commands (e.g.
    /// `sudo -n sh -c {{quote command}}`); `None` runs them as the login user.
    pub execute_command: Option<String>,
    /// Reboot through the platform instead of a command.
    pub platform: Option<Arc<dyn PlatformReboot>>,
    /// Asked whether the machine still runs while waiting ([`PlatformReboot::machine_state`]); also
    /// when the reboot itself is a command.
    pub probe: Option<Arc<dyn PlatformReboot>>,
    /// A command that must exit 0 before the machine counts as back (e.g. "no reboot pending",
    /// "cloud-init finished"). `None`: what the OS says about itself ([`os_readiness`]).
    pub readiness: Option<String>,
    /// How long the new identity and the readiness command must stay good before the machine counts
    /// as settled. `None` uses [`default_settle`] for the machine's OS.
    pub settle: Option<Duration>,
    /// Give up after this long from the reboot request. Default [`DEFAULT_REBOOT_TIMEOUT`].
    pub timeout: Duration,
    /// The setting a user raises to wait longer, for the "never came back" message (default: "the
    /// reboot timeout").
    pub timeout_setting: Option<String>,
    /// Longest pause between two polls while waiting. Default 500 ms: polls are a TCP connect or
    /// one short command, and a shorter cap is what lets the wait notice a machine that came back
    /// well within a second.
    pub poll_max: Duration,
    /// How long the reboot command may run before it counts as issued anyway (a command that reboots
    /// the machine under its own session usually never returns an exit status). Default 60 s.
    pub command_timeout: Duration,
    /// Limit for each probe command (boot identity, readiness) while waiting; one that hangs counts as
    /// "not back yet". Default 60 s.
    pub probe_timeout: Duration,
}

impl Default for RebootOptions {
    fn default() -> Self {
        RebootOptions {
            command: None,
            execute_command: None,
            platform: None,
            probe: None,
            readiness: None,
            settle: None,
            timeout: DEFAULT_REBOOT_TIMEOUT,
            timeout_setting: None,
            poll_max: Duration::from_millis(500),
            command_timeout: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for RebootOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebootOptions")
            .field("command", &self.command)
            .field("execute_command", &self.execute_command)
            .field("platform", &self.platform.as_ref().map(|p| p.describe()))
            .field("probe", &self.probe.as_ref().map(|p| p.describe()))
            .field("readiness", &self.readiness)
            .field("settle", &self.settle)
            .field("timeout", &self.timeout)
            .field("timeout_setting", &self.timeout_setting)
            .field("poll_max", &self.poll_max)
            .field("command_timeout", &self.command_timeout)
            .field("probe_timeout", &self.probe_timeout)
            .finish()
    }
}

/// The settle window used when [`RebootOptions::settle`] is `None`.
///
/// - Linux: 300 ms. A changed boot identity already proves the reboot happened; a Linux machine
///   that reboots once more on its own (a first-boot resize, a cloud-init module) is caught by
///   [`recover`] in the next step anyway. A window of seconds would only add latency to every reboot
///   (the goal is under a second from SSH coming back to "settled"); 300 ms still confirms the new
///   boot twice over a fresh look.
/// - Windows: 30 s. Windows Update commonly brings SSH up between the reboots of one update chain;
///   better, also give a readiness command that checks for pending reboots.
pub fn default_settle(os: Os) -> Duration {
    match os {
        Os::Linux => Duration::from_millis(300),
        Os::Windows => Duration::from_secs(30),
    }
}

/// What a reboot did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebootReport {
    /// The identity before the reboot.
    pub before: BootIdentity,
    /// The identity it settled with.
    pub after: BootIdentity,
    /// How many boots were seen (more than one: a chain of reboots).
    pub reboots: u32,
    /// From the reboot request to settled.
    pub waited: Duration,
}

/// What an unplanned disconnect turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Same boot: the network (or the SSH server) dropped the connection; it is reconnected.
    NetworkDrop {
        /// The unchanged identity.
        boot_id: BootIdentity,
    },
    /// The machine rebooted during the step; it is back and settled.
    Rebooted {
        /// The identity the step started with.
        from: BootIdentity,
        /// The identity it settled with.
        to: BootIdentity,
        /// How many boots were seen.
        reboots: u32,
    },
}

/// Why a reboot or a recovery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebootError {
    /// The boot identity could not be read before rebooting.
    #[error("cannot read the boot identity of {target} before rebooting: {source}")]
    Identity {
        /// Who.
        target: String,
        /// Why.
        source: CommError,
    },
    /// The reboot command ended with an error, so no reboot is coming.
    #[error("the reboot command `{command}` on {target} {status}: {output}")]
    CommandRefused {
        /// Who.
        target: String,
        /// The command as sent.
        command: String,
        /// How it ended.
        status: ExecStatus,
        /// Its output (stderr, else stdout).
        output: String,
    },
    /// The platform refused to reboot the machine.
    #[error("{what} failed: {reason}")]
    Platform {
        /// The platform call.
        what: String,
        /// Its error.
        reason: String,
    },
    /// The machine did not come back with a new boot identity in time.
    #[error(
        "{target} did not come back within {} (last state: {last_state}); check the machine's console, or raise \
         {raise}", crate::provision::humantime_short(*waited)
    )]
    NeverCameBack {
        /// Who.
        target: String,
        /// How long it waited.
        waited: Duration,
        /// What the last poll saw.
        last_state: String,
        /// The setting that bounds the wait.
        raise: String,
    },
    /// The platform says the machine is stopped or gone: it will not come back by itself.
    #[error("{target} will not come back: {reason} (noticed after {}); see the machine's console or the platform's event log", crate::provision::humantime_short(*waited))]
    MachineGone {
        /// Who.
        target: String,
        /// What the platform reported.
        reason: String,
        /// How long it had waited.
        waited: Duration,
    },
    /// The machine came back (new boot identity) but the readiness command never passed.
    #[error(
        "{target} came back (boot {boot_id}) but the readiness command `{command}` did not pass within {waited:?}; \
         its last result: {last_output}"
    )]
    NotReady {
        /// Who.
        target: String,
        /// The new identity.
        boot_id: BootIdentity,
        /// The readiness command.
        command: String,
        /// How long it waited in all.
        waited: Duration,
        /// Its last exit status and output.
        last_output: String,
    },
    /// A communicator failure that waiting cannot fix (authentication, host key).
    #[error(transparent)]
    Comm(#[from] CommError),
}

/// Reboot the machine behind `comm` and wait until it is back and settled.
pub async fn reboot(
    comm: &dyn Communicator,
    opts: &RebootOptions,
    events: &EventSink,
) -> Result<RebootReport, RebootError> {
    let target = comm.target();
    let start = Instant::now();
    comm.connect(&connect_wait(opts, opts.timeout)).await?;
    let before =
        comm.boot_identity().await.map_err(|source| RebootError::Identity { target: target.clone(), source })?;
    events.state(&what(&target), &format!("rebooting from boot {before}"));
    issue(comm, opts, events).await?;
    let (after, reboots) = settle(comm, opts, events, &before, &before, 0, start).await?;
    let waited = start.elapsed();
    events.emit(EventKind::Settled { boot_id: after.0.clone(), reboots, waited });
    Ok(RebootReport { before, after, reboots, waited })
}

/// After a connection broke during a step, find out what happened: reconnect, compare the boot
/// identity with `known` (read before the step), and if the machine rebooted wait until it settles.
pub async fn recover(
    comm: &dyn Communicator,
    known: &BootIdentity,
    opts: &RebootOptions,
    events: &EventSink,
) -> Result<Recovery, RebootError> {
    let target = comm.target();
    let start = Instant::now();
    // The old session is dead or dying: start from a fresh one.
    comm.disconnect().await;
    let watcher = Watcher::new(comm, opts, events, known);
    let id = watcher.back_with_any_identity(start).await?;
    if &id == known {
        events.state(&what(&target), "reconnected: same boot (network drop)");
        return Ok(Recovery::NetworkDrop { boot_id: id });
    }
    events.emit(EventKind::Rebooted { from: known.0.clone(), to: id.0.clone() });
    let (after, reboots) = settle(comm, opts, events, known, &id, 1, start).await?;
    events.emit(EventKind::Settled { boot_id: after.0.clone(), reboots, waited: start.elapsed() });
    Ok(Recovery::Rebooted { from: known.clone(), to: after, reboots })
}

fn what(target: &str) -> String {
    format!("reboot of {target}")
}

/// The connect wait used while waiting for a machine: frequent, capped polls.
fn connect_wait(opts: &RebootOptions, timeout: Duration) -> Wait {
    let initial = Duration::from_millis(100).min(opts.poll_max);
    Wait::new(timeout).interval(initial, opts.poll_max)
}

/// Send the reboot request. A command that loses its connection did its job.
async fn issue(comm: &dyn Communicator, opts: &RebootOptions, events: &EventSink) -> Result<(), RebootError> {
    let target = comm.target();
    if let Some(platform) = &opts.platform {
        events.state(&what(&target), &format!("requesting {}", platform.describe()));
        return platform
            .reboot()
            .await
            .map_err(|e| RebootError::Platform { what: platform.describe(), reason: e.to_string() });
    }
    let command = opts.command.clone().unwrap_or_else(|| default_reboot_command(comm.os()).to_string());
    let req = ExecRequest {
        command: command.clone(),
        execute_command: opts.execute_command.clone(),
        timeout: Some(opts.command_timeout),
        capture: true,
        ..ExecRequest::default()
    };
    // Show what will run (with sudo etc.) in errors.
    let sent = compose(comm.os(), &req).unwrap_or_else(|_| command.clone());
    match comm.exec(&req, events).await {
        Ok(out) => match out.status {
            ExecStatus::Exited(0) | ExecStatus::ConnectionLost | ExecStatus::Signaled(_) => Ok(()),
            status => {
                let text = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) { &out.stderr } else { &out.stdout };
                Err(RebootError::CommandRefused {
                    target,
                    command: sent,
                    status,
                    output: String::from_utf8_lossy(text).trim().to_string(),
                })
            }
        },
        // The machine went down under the command, or the command hung until it did.
        Err(e) if e.is_not_up() || matches!(e, CommError::Timeout { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Wait from `current` (a new boot, or `before` when none seen yet) until the machine has a new
/// identity, passes readiness, and stays so for the settle window. Returns the final identity and
/// the number of boots seen.
async fn settle(
    comm: &dyn Communicator,
    opts: &RebootOptions,
    events: &EventSink,
    before: &BootIdentity,
    current: &BootIdentity,
    mut reboots: u32,
    start: Instant,
) -> Result<(BootIdentity, u32), RebootError> {
    let settle_for = opts.settle.unwrap_or_else(|| default_settle(comm.os()));
    let mut current = current.clone();
    loop {
        let watcher = Watcher::new(comm, opts, events, before);
        // Phase 1: back with a boot that is not `before`, readiness passing.
        let id = watcher.back_and_ready(start, &mut current, &mut reboots).await?;
        // Phase 2: stays so for the settle window.
        match watcher.stays(start, &id, settle_for).await? {
            None => return Ok((id, reboots)),
            Some(Interrupt::NewBoot(next)) => {
                events.emit(EventKind::Rebooted { from: id.0.clone(), to: next.0.clone() });
                reboots += 1;
                current = next;
            }
            Some(Interrupt::Down(why) | Interrupt::NotReady(why)) => {
                events.state(&what(&comm.target()), &format!("not settled: {why}"));
            }
        }
    }
}

/// Why a settle window was cut short.
enum Interrupt {
    NewBoot(BootIdentity),
    Down(String),
    NotReady(String),
}

/// What one look at the machine found.
enum Look {
    Down(String),
    Identity(BootIdentity),
}

struct Watcher<'a> {
    comm: &'a dyn Communicator,
    opts: &'a RebootOptions,
    events: &'a EventSink,
    before: &'a BootIdentity,
    target: String,
}

impl<'a> Watcher<'a> {
    fn new(
        comm: &'a dyn Communicator,
        opts: &'a RebootOptions,
        events: &'a EventSink,
        before: &'a BootIdentity,
    ) -> Self {
        Watcher { comm, opts, events, before, target: comm.target() }
    }

    fn remaining(&self, start: Instant) -> Duration {
        self.opts.timeout.saturating_sub(start.elapsed())
    }

    fn poll_wait(&self, start: Instant) -> Wait {
        connect_wait(self.opts, self.remaining(start))
    }

    /// The readiness command: the given one, else the OS's own.
    fn readiness(&self) -> String {
        self.opts.readiness.clone().unwrap_or_else(|| os_readiness(self.comm.os()).to_string())
    }

    fn raise(&self) -> String {
        self.opts.timeout_setting.clone().unwrap_or_else(|| "the reboot timeout".to_string())
    }

    /// Connect, waiting as long as the overall timeout allows; meanwhile show progress and ask the
    /// platform whether the machine still runs, every [`WATCH_EVERY`]. A machine the platform reports
    /// gone ends the wait at once.
    async fn connect_watched(&self, start: Instant) -> Result<Result<(), CommError>, RebootError> {
        let wait = self.poll_wait(start);
        let connect = self.comm.connect(&wait);
        tokio::pin!(connect);
        let mut ticks = tokio::time::interval_at(Instant::now() + WATCH_EVERY, WATCH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = &mut connect => return Ok(r),
                _ = ticks.tick() => {
                    self.check_platform(start).await?;
                    let waited = start.elapsed();
                    self.events.state(
                        &what(&self.target),
                        &format!(
                            "down: no SSH session for {} (gives up after {})",
                            crate::provision::humantime_short(Duration::from_secs(waited.as_secs())),
                            crate::provision::humantime_short(self.opts.timeout),
                        ),
                    );
                }
            }
        }
    }

    /// `Err` when the platform says the machine is stopped or gone.
    async fn check_platform(&self, start: Instant) -> Result<(), RebootError> {
        let Some(probe) = &self.opts.probe else { return Ok(()) };
        // A slow platform call must not hold up the wait itself.
        match tokio::time::timeout(WATCH_EVERY * 5, probe.machine_state()).await {
            Ok(MachineState::Gone(reason)) => {
                Err(RebootError::MachineGone { target: self.target.clone(), reason, waited: start.elapsed() })
            }
            _ => Ok(()),
        }
    }

    /// Connect (waiting as long as the overall timeout allows) and read the boot identity.
    async fn look(&self, start: Instant) -> Result<Look, RebootError> {
        match self.connect_watched(start).await? {
            Ok(()) => {}
            Err(CommError::ConnectTimeout { waited, last_error, .. }) => {
                return Err(RebootError::NeverCameBack {
                    target: self.target.clone(),
                    waited: start.elapsed().max(waited),
                    last_state: format!("no SSH session: {last_error}"),
                    raise: self.raise(),
                });
            }
            Err(e) if e.is_not_up() => return Ok(Look::Down(e.to_string())),
            Err(e) => return Err(e.into()),
        }
        match tokio::time::timeout(self.opts.probe_timeout, self.comm.boot_identity()).await {
            Ok(Ok(id)) => Ok(Look::Identity(id)),
            // Lost, or the machine is too far into shutting down to run the command: not back.
            Ok(Err(e)) => {
                self.comm.disconnect().await;
                Ok(Look::Down(format!("reading the boot identity: {e}")))
            }
            Err(_) => {
                self.comm.disconnect().await;
                Ok(Look::Down(format!("the boot identity command did not answer within {:?}", self.opts.probe_timeout)))
            }
        }
    }

    /// Run the readiness command; `Err` carries its status and output.
    async fn ready(&self) -> Result<(), String> {
        let req = ExecRequest {
            command: self.readiness(),
            execute_command: self.opts.execute_command.clone(),
            timeout: Some(self.opts.probe_timeout),
            capture: true,
            quiet: true,
            ..ExecRequest::default()
        };
        match self.comm.exec(&req, self.events).await {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
                let stdout = out.stdout_text();
                if !stdout.is_empty() {
                    text = if text.is_empty() { stdout } else { format!("{stdout} / {text}") };
                }
                Err(format!("{}{}", out.status, if text.is_empty() { String::new() } else { format!(": {text}") }))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Until the machine answers at all; returns its identity (used by [`recover`]).
    async fn back_with_any_identity(&self, start: Instant) -> Result<BootIdentity, RebootError> {
        let r = wait::until_observed(
            &self.poll_wait(start),
            &format!("{} to come back", self.target),
            || async {
                match self.look(start).await {
                    Ok(Look::Identity(id)) => Poll::Ready(id),
                    Ok(Look::Down(why)) => Poll::Pending(format!("down: {why}")),
                    Err(e) => Poll::Failed(e),
                }
            },
            |s| self.events.state(&what(&self.target), s),
        )
        .await;
        self.timed_out(r, start, None)
    }

    /// Phase 1: until a boot other than `before` answers and passes readiness. Counts new boots.
    async fn back_and_ready(
        &self,
        start: Instant,
        current: &mut BootIdentity,
        reboots: &mut u32,
    ) -> Result<BootIdentity, RebootError> {
        let seen = std::sync::Mutex::new((current.clone(), *reboots, None::<String>));
        let r = wait::until_observed(
            &self.poll_wait(start),
            &format!("{} to come back", self.target),
            || async {
                let look = match self.look(start).await {
                    Ok(l) => l,
                    Err(e) => return Poll::Failed(e),
                };
                let id = match look {
                    Look::Down(why) => return Poll::Pending(format!("down: {why}")),
                    Look::Identity(id) if &id == self.before => {
                        // Still the boot we asked to reboot: it has not gone down yet. Drop the
                        // session so the next look needs a fresh login.
                        self.comm.disconnect().await;
                        return Poll::Pending(format!("still up with the old boot {id} (not gone down yet)"));
                    }
                    Look::Identity(id) => id,
                };
                if let Ok(mut s) = seen.lock()
                    && s.0 != id
                {
                    self.events.emit(EventKind::Rebooted { from: s.0.0.clone(), to: id.0.clone() });
                    s.0 = id.clone();
                    s.1 += 1;
                }
                match self.ready().await {
                    Ok(()) => Poll::Ready(id),
                    Err(out) => {
                        if let Ok(mut s) = seen.lock() {
                            s.2 = Some(out.clone());
                        }
                        Poll::Pending(format!("back with boot {id}, readiness not passing: {out}"))
                    }
                }
            },
            |s| self.events.state(&what(&self.target), s),
        )
        .await;
        let (id, count, readiness) = seen.into_inner().unwrap_or_else(|p| p.into_inner());
        *current = id.clone();
        *reboots = count;
        let not_ready = (&id != self.before).then_some(()).and(readiness).map(|out| (id, out));
        self.timed_out(r, start, not_ready)
    }

    /// Phase 2: the boot `id` stays up and ready for `window`. `None`: settled.
    async fn stays(
        &self,
        start: Instant,
        id: &BootIdentity,
        window: Duration,
    ) -> Result<Option<Interrupt>, RebootError> {
        if window.is_zero() {
            return Ok(None);
        }
        let since = Instant::now();
        // A few looks spread over the window, never fewer than one at its end.
        let step = (window / 3).clamp(Duration::from_millis(50), self.opts.poll_max);
        let checks = Wait {
            timeout: self.remaining(start),
            initial: step,
            max_interval: step,
            factor: 1.0,
            jitter: false,
            successes: 1,
        };
        let r = wait::until(&checks, &format!("{} to settle", self.target), || async {
            let look = match self.look(start).await {
                Ok(l) => l,
                Err(e) => return Poll::Failed(Err(e)),
            };
            match look {
                Look::Down(why) => Poll::Failed(Ok(Interrupt::Down(why))),
                Look::Identity(now) if &now != id => Poll::Failed(Ok(Interrupt::NewBoot(now))),
                Look::Identity(_) => match self.ready().await {
                    Err(out) => Poll::Failed(Ok(Interrupt::NotReady(format!("readiness stopped passing: {out}")))),
                    Ok(()) if since.elapsed() >= window => Poll::Ready(()),
                    Ok(()) => Poll::Pending(format!("settling on boot {id}")),
                },
            }
        })
        .await;
        match r {
            Ok(()) => Ok(None),
            Err(WaitError::Failed(Ok(i))) => Ok(Some(i)),
            Err(WaitError::Failed(Err(e))) => Err(e),
            Err(WaitError::TimedOut { last_state, .. }) => Err(RebootError::NeverCameBack {
                target: self.target.clone(),
                waited: start.elapsed(),
                last_state,
                raise: self.raise(),
            }),
        }
    }

    fn timed_out<T>(
        &self,
        r: Result<T, WaitError<RebootError>>,
        start: Instant,
        not_ready: Option<(BootIdentity, String)>,
    ) -> Result<T, RebootError> {
        match r {
            Ok(v) => Ok(v),
            Err(WaitError::Failed(e)) => Err(e),
            Err(WaitError::TimedOut { last_state, .. }) => Err(match not_ready {
                Some((boot_id, last_output)) => RebootError::NotReady {
                    target: self.target.clone(),
                    boot_id,
                    command: self.opts.readiness.clone().unwrap_or_else(|| "(the OS's own readiness check)".into()),
                    waited: start.elapsed(),
                    last_output,
                },
                _ => RebootError::NeverCameBack {
                    target: self.target.clone(),
                    waited: start.elapsed(),
                    last_state,
                    raise: self.raise(),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linux_os_readiness_check_is_valid_sh_and_passes_without_systemd() {
        let syntax = std::process::Command::new("sh").args(["-n", "-c", LINUX_OS_READY]).output().expect("sh");
        assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
        // This machine runs no systemd (no /run/systemd/system): the check falls back to /run/nologin.
        if !std::path::Path::new("/run/systemd/system").exists() && !std::path::Path::new("/run/nologin").exists() {
            let run = std::process::Command::new("sh").args(["-c", LINUX_OS_READY]).output().expect("sh");
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
        }
    }

    #[test]
    fn no_readiness_command_means_the_os_own_check() {
        assert!(os_readiness(Os::Linux).contains("is-system-running --wait"));
        assert!(os_readiness(Os::Windows).contains("RebootPending"));
        assert!(os_readiness(Os::Windows).contains("PendingFileRenameOperations"));
    }
}
