//! The step runner: runs an image's steps on a machine through a [`Communicator`], the same for every
//! builder.
//!
//! [`StepRunner`] implements [`Provision`]. For each step of the image (in order) it applies what every
//! kind shares — `only`/`except`, `pause_before`, the per-step `timeout`, `retries` with backoff,
//! breakpoints in debug mode, "what now?" after a failure ([`Interaction`]) — and runs the kind:
//! [`shell`], [`file`], [`powershell`], [`reboot`](mod@reboot), [`windows_update`], [`test`], [`local`],
//! [`breakpoint`], and the configuration-management kinds [`ansible`] (`ansible` and
//! `ansible_local`), [`chef`] (`chef_solo`), [`puppet`] (`puppet_apply`) and [`dsc`]
//! (`powershell_dsc`). Output streams as events stamped with the image and the step; secrets (the tree's
//! sensitive values) are redacted from every event, error and report. Unplanned reboots are noticed by
//! the machine's boot identity ([`crate::reboot::recover`]), see [`remote`].
//!
//! Afterwards — also after a failure — [`StepRunner::report`] tells what ran and the test results.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use imgbake_core::builder::Provision;
//! # use imgbake_core::provision::{StepContext, StepRunner};
//! # async fn demo(tree: Arc<imgbake_config::Tree>, comm: &dyn imgbake_core::communicator::Communicator,
//! #               events: imgbake_core::event::EventSink) {
//! let runner = StepRunner::new(StepContext::new(tree, "web", "aws", events));
//! let result = runner.provision(comm, None).await;
//! let report = runner.report(); // steps and test results, for the manifest
//! # let _ = (result, report); }
//! ```

pub mod ansible;
pub mod breakpoint;
pub mod chef;
pub mod cm;
pub mod dsc;
pub mod file;
mod interaction;
pub mod junit;
pub mod local;
pub mod powershell;
pub mod puppet;
pub mod reboot;
pub mod remote;
mod report;
pub mod shell;
pub mod test;
pub mod windows_update;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use imgbake_config::{Image, Os, Span, Spanned, Step, StepKind, Tree};
use tokio::time::Instant;

use crate::builder::Provision;
use crate::communicator::{BootIdentity, CommError, Communicator};
use crate::error::{BuildError, ErrorKind};
use crate::event::{EventKind, EventSink};
use crate::reboot::PlatformReboot;
use crate::wait::Wait;

pub use interaction::{BreakpointInfo, FailureChoice, Interaction, NonInteractive, StepFailure};
pub use report::{CaseOutcome, ProvisionReport, StepOutcome, StepRecord, TestCase, TestSuiteReport};

/// How often a step is run again because the machine rebooted under it (`on_reboot = "rerun"`)
/// before imgbake gives up: a machine that reboots every time is not going to settle.
const MAX_RERUNS: u32 = 5;

/// Extra time given to a step's own clean-up (killing the remote command) after its timeout, before the
/// step is abandoned.
const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

/// What the runner needs to know about the build.
#[derive(Clone)]
pub struct StepContext {
    /// The tree, rendered with this build's values.
    pub tree: Arc<Tree>,
    /// The image being built.
    pub image: String,
    /// The builder kind (`aws`, `qemu`, ...), for `only` / `except`.
    pub builder: String,
    /// Progress; the runner stamps the image and step and adds the tree's secrets.
    pub events: EventSink,
    /// The build's values (`IMGBAKE_IMAGE`, `IMGBAKE_BUILD_ID`, `IMGBAKE_BUILDER`, `IMGBAKE_SOURCE`, ...),
    /// exported to `local` steps.
    pub values: BTreeMap<String, String>,
    /// The person running the build, if any.
    pub interaction: Arc<dyn Interaction>,
    /// `--debug`: pause before every step.
    pub debug: bool,
    /// In debug mode, the file holding the machine's temporary private key (shown at pauses).
    pub key_file: Option<PathBuf>,
    /// Where fetched test reports are kept. Default: `<state_dir>/reports/<image>`.
    pub report_dir: Option<PathBuf>,
}

impl StepContext {
    /// A context with the values `IMGBAKE_IMAGE` and `IMGBAKE_BUILDER`, no interaction, no debug.
    pub fn new(tree: Arc<Tree>, image: impl Into<String>, builder: impl Into<String>, events: EventSink) -> Self {
        let (image, builder) = (image.into(), builder.into());
        let values = BTreeMap::from([
            ("IMGBAKE_IMAGE".to_string(), image.clone()),
            ("IMGBAKE_BUILDER".to_string(), builder.clone()),
        ]);
        StepContext {
            tree,
            image,
            builder,
            events,
            values,
            interaction: Arc::new(NonInteractive),
            debug: false,
            key_file: None,
            report_dir: None,
        }
    }
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("image", &self.image)
            .field("builder", &self.builder)
            .field("debug", &self.debug)
            .finish_non_exhaustive()
    }
}

/// Runs an image's steps. One runner per build.
pub struct StepRunner {
    cx: StepContext,
    events: EventSink,
    report: Mutex<ProvisionReport>,
    /// The machine's boot identity as last seen (to tell a reboot from a network drop).
    boot: tokio::sync::Mutex<Option<BootIdentity>>,
    retry_wait: Wait,
}

impl StepRunner {
    /// A runner for `cx`.
    pub fn new(cx: StepContext) -> Self {
        let events = cx.events.for_image(&cx.image).with_secrets(cx.tree.secrets());
        StepRunner {
            cx,
            events,
            report: Mutex::new(ProvisionReport::default()),
            boot: tokio::sync::Mutex::new(None),
            retry_wait: Wait::default().interval(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }

    /// Pause between retries of a failed step: from `initial`, growing (with jitter) up to `max`.
    pub fn with_retry_interval(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_wait = self.retry_wait.interval(initial, max);
        self
    }

    /// What ran so far: complete after [`Provision::provision`] returned, also when it failed.
    pub fn report(&self) -> ProvisionReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The context it runs with.
    pub fn context(&self) -> &StepContext {
        &self.cx
    }

    fn record(&self, rec: StepRecord) {
        if let Ok(mut r) = self.report.lock() {
            r.steps.push(rec);
        }
    }

    pub(crate) fn record_tests(&self, suite: TestSuiteReport) {
        if let Ok(mut r) = self.report.lock() {
            // A retried test step keeps only its last run.
            r.tests.retain(|t| t.step != suite.step);
            r.tests.push(suite);
        }
    }

    fn image(&self) -> Result<&Image, BuildError> {
        self.cx.tree.image(&self.cx.image).ok_or_else(|| {
            BuildError::new(ErrorKind::Config, format!("the tree has no image `{}` to provision", self.cx.image))
        })
    }

    async fn run_step(
        &self,
        comm: &dyn Communicator,
        platform: &Option<Arc<dyn PlatformReboot>>,
        image: &Image,
        index: usize,
        step: &Step,
    ) -> Result<(), BuildError> {
        let label = step.label(index);
        let kind = step.kind.kind();
        let events = self.events.for_step(&label);
        let start = Instant::now();
        events.emit(EventKind::StepStarted { index, kind: kind.to_string() });
        let finish = |outcome: StepOutcome, attempts: u32, error: Option<String>| {
            let duration = start.elapsed();
            events.emit(EventKind::StepFinished { index, duration, outcome });
            self.record(StepRecord {
                index,
                name: label.clone(),
                kind: kind.to_string(),
                outcome,
                duration,
                attempts,
                error,
            });
        };
        if !step.runs_on(&self.cx.builder) {
            events.info(format!("skipped: does not run with builder `{}`", self.cx.builder));
            finish(StepOutcome::Skipped, 0, None);
            return Ok(());
        }
        let cx = Ctx {
            runner: self,
            comm,
            platform: platform.clone(),
            image,
            step,
            index,
            label: label.clone(),
            events: events.clone(),
            deadline: None,
        };
        if self.cx.debug {
            self.cx.interaction.breakpoint(cx.breakpoint_info(format!("--debug: paused before {label}"))).await;
        }
        if let Some(p) = &step.pause_before {
            events.warn(format!(
                "pause_before: waiting {} before {label} (kept for Packer compatibility; imgbake does not need pauses \
                 around reboots, it watches the machine's boot identity)",
                p.get_ref()
            ));
            tokio::time::sleep(p.get_ref().get()).await;
        }
        let mut attempts = 0u32;
        let mut reruns = 0u32;
        let mut pauses = self.retry_wait.pauses();
        loop {
            attempts += 1;
            let result = self.attempt(&cx).await;
            let err = match result {
                Ok(Done::Ok) => {
                    finish(StepOutcome::Ok, attempts, None);
                    return Ok(());
                }
                Ok(Done::Rerun) if reruns < MAX_RERUNS => {
                    reruns += 1;
                    events.warn(format!("running {label} again from the start: the machine rebooted under it"));
                    continue;
                }
                Ok(Done::Rerun) => cx.fail(
                    ErrorKind::Step,
                    format!("the machine rebooted during {label} {} times in a row; giving up", reruns + 1),
                ),
                Err(e) => e,
            };
            let retryable = !matches!(err.kind, ErrorKind::Config | ErrorKind::Cancelled | ErrorKind::Aborted);
            if retryable && attempts <= step.retries {
                let pause = pauses.next().unwrap_or(self.retry_wait.max_interval);
                events.warn(format!(
                    "attempt {attempts} of {} failed: {}; retrying in {:.1}s",
                    step.retries + 1,
                    err.chain(),
                    pause.as_secs_f64()
                ));
                tokio::time::sleep(pause).await;
                continue;
            }
            let failure = StepFailure {
                image: self.cx.image.clone(),
                step: label.clone(),
                index,
                attempts,
                error: events.redact(&err.chain()),
                target: comm.target(),
            };
            let choice =
                if retryable { self.cx.interaction.on_failure(&failure).await } else { FailureChoice::Cleanup };
            match choice {
                FailureChoice::Retry => {
                    events.info(format!("running {label} again (asked after the failure)"));
                    continue;
                }
                FailureChoice::Cleanup => {
                    finish(StepOutcome::Failed, attempts, Some(failure.error.clone()));
                    return Err(err);
                }
                FailureChoice::Abort => {
                    finish(StepOutcome::Failed, attempts, Some(failure.error.clone()));
                    let mut e = BuildError::new(
                        ErrorKind::Aborted,
                        format!(
                            "aborted after {label} failed: {}; the machine ({}) is left running for inspection — \
                             remove it with `imgbake clean` when done",
                            failure.error, failure.target
                        ),
                    );
                    e.span = err.span;
                    return Err(e);
                }
            }
        }
    }

    /// One run of a step, within its timeout.
    async fn attempt(&self, base: &Ctx<'_>) -> Result<Done, BuildError> {
        let step = base.step;
        // A breakpoint waits for a person; a timeout would only cut them off.
        let timeout = step.timeout.map(|t| t.get()).filter(|_| !matches!(step.kind, StepKind::Breakpoint(_)));
        let cx = Ctx { deadline: timeout.map(|t| Instant::now() + t), ..base.clone() };
        let run = async {
            match &step.kind {
                StepKind::Shell(s) => shell::run(&cx, s).await,
                StepKind::File(f) => file::run(&cx, f).await.map(|()| Done::Ok),
                StepKind::Powershell(p) => powershell::run(&cx, p).await,
                StepKind::Reboot(r) => reboot::run(&cx, r).await.map(|()| Done::Ok),
                StepKind::WindowsUpdate(w) => windows_update::run(&cx, w).await.map(|()| Done::Ok),
                StepKind::Test(t) => test::run(&cx, t).await.map(|()| Done::Ok),
                StepKind::Local(l) => local::run(&cx, l).await.map(|()| Done::Ok),
                StepKind::Breakpoint(b) => breakpoint::run(&cx, b).await.map(|()| Done::Ok),
                StepKind::Ansible(a) => ansible::run(&cx, a).await.map(|()| Done::Ok),
                StepKind::AnsibleLocal(a) => ansible::run_local(&cx, a).await.map(|()| Done::Ok),
                StepKind::ChefSolo(c) => chef::run(&cx, c).await.map(|()| Done::Ok),
                StepKind::PuppetApply(p) => puppet::run(&cx, p).await.map(|()| Done::Ok),
                StepKind::PowershellDsc(d) => dsc::run(&cx, d).await.map(|()| Done::Ok),
            }
        };
        match (timeout, cx.deadline) {
            (Some(t), Some(deadline)) => match tokio::time::timeout_at(deadline + TIMEOUT_GRACE, run).await {
                Ok(r) => r,
                Err(_) => Err(cx.timed_out(t)),
            },
            _ => run.await,
        }
    }
}

#[async_trait]
impl Provision for StepRunner {
    async fn provision(
        &self,
        comm: &dyn Communicator,
        platform: Option<Arc<dyn PlatformReboot>>,
    ) -> Result<(), BuildError> {
        let image = self.image()?;
        let connect = Wait::new(image.communicator.timeout.map(|t| t.get()).unwrap_or(Duration::from_secs(600)))
            .interval(Duration::from_millis(200), Duration::from_secs(5));
        comm.connect(&connect).await.map_err(|e| {
            BuildError::new(
                ErrorKind::Communicator,
                self.events.redact(&format!("cannot connect to {}: {e}", comm.target())),
            )
        })?;
        // The last step that worked on the machine and the boot it finished on: confirmed before the
        // next such step and before provisioning ends, so a step whose boot ended right after it is
        // never counted as done.
        let mut ran_on: Option<(usize, BootIdentity)> = None;
        let mut reruns = 0u32;
        let mut i = 0;
        while i < image.steps.len() {
            let step = &image.steps[i];
            let on_machine = works_on_machine(step) && step.runs_on(&self.cx.builder);
            if on_machine && let Some(again) = self.confirm(comm, &platform, image, &mut ran_on, &mut reruns).await? {
                i = again;
                continue;
            }
            self.run_step(comm, &platform, image, i + 1, step).await?;
            if on_machine {
                ran_on = self.boot.lock().await.clone().map(|id| (i, id));
            }
            i += 1;
        }
        // The builder captures what the last step left: only if the machine still runs its boot.
        while let Some(again) = self.confirm(comm, &platform, image, &mut ran_on, &mut reruns).await? {
            let step = &image.steps[again];
            self.run_step(comm, &platform, image, again + 1, step).await?;
            ran_on = self.boot.lock().await.clone().map(|id| (again, id));
        }
        Ok(())
    }

    async fn sanitize(
        &self,
        comm: &dyn Communicator,
        items: &crate::sanitize::SanitizeItems,
    ) -> Result<(), BuildError> {
        crate::sanitize::run(&self.events, self.image()?, comm, items).await
    }
}

/// Does the step work on the machine (so a reboot can undo or cut it short)?
fn works_on_machine(step: &Step) -> bool {
    !matches!(step.kind, StepKind::Local(_) | StepKind::Breakpoint(_))
}

impl StepRunner {
    /// Confirm that the machine still runs the boot the last machine step (`ran_on`) finished on.
    /// `Ok(None)`: confirmed (or nothing to confirm). `Ok(Some(i))`: the boot ended and step `i`
    /// (0-based) is idempotent: run it again. A step that is not idempotent fails the build, naming
    /// the step and both boots.
    async fn confirm(
        &self,
        comm: &dyn Communicator,
        platform: &Option<Arc<dyn PlatformReboot>>,
        image: &Image,
        ran_on: &mut Option<(usize, BootIdentity)>,
        reruns: &mut u32,
    ) -> Result<Option<usize>, BuildError> {
        let Some((i, boot)) = ran_on.take() else { return Ok(None) };
        let step = &image.steps[i];
        let label = step.label(i + 1);
        let cx = Ctx {
            runner: self,
            comm,
            platform: platform.clone(),
            image,
            step,
            index: i + 1,
            label: label.clone(),
            events: self.events.for_step(&label),
            deadline: None,
        };
        let (_, now) = cx.observe_boot().await?;
        if now == boot {
            return Ok(None);
        }
        if !step.is_idempotent() {
            return Err(cx.fail(
                ErrorKind::Step,
                format!(
                    "the machine rebooted right after the step (it finished on boot {boot}, the machine now runs boot \
                     {now}), so its work may be lost and the step is not counted as done. It is not idempotent, so \
                     imgbake does not run it again: set `idempotent = true` on it if running it twice is harmless, \
                     or give the reboot before it a `readiness` command or a longer `settle`"
                ),
            ));
        }
        *reruns += 1;
        if *reruns > MAX_RERUNS {
            return Err(cx.fail(
                ErrorKind::Step,
                format!("the machine rebooted after steps {MAX_RERUNS} times in a row (last: boot {boot} → {now}); giving up"),
            ));
        }
        cx.events.warn(format!(
            "the machine rebooted right after {label} (boot {boot} → {now}); running it again on the new boot (the \
             step is idempotent)"
        ));
        Ok(Some(i))
    }
}

/// How a step attempt ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Done {
    /// Finished.
    Ok,
    /// The machine rebooted under it and `on_reboot = "rerun"`: run it again from the start.
    Rerun,
}

/// One attempt of one step: what the kinds get.
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    pub runner: &'a StepRunner,
    pub comm: &'a dyn Communicator,
    pub platform: Option<Arc<dyn PlatformReboot>>,
    pub image: &'a Image,
    pub step: &'a Step,
    pub index: usize,
    pub label: String,
    /// Stamped with the image and this step; redacts secrets.
    pub events: EventSink,
    /// When the step's timeout runs out.
    pub deadline: Option<Instant>,
}

impl Ctx<'_> {
    pub fn tree(&self) -> &Tree {
        &self.runner.cx.tree
    }

    pub fn os(&self) -> Os {
        self.comm.os()
    }

    /// The step's own `execute_command`, else the image's `communicator.execute_command`.
    pub fn execute_command(&self, own: Option<&Spanned<String>>) -> Option<String> {
        own.map(|s| s.get_ref().clone()).or_else(|| self.image.communicator.execute_command.clone())
    }

    /// Time left before the step's timeout (`None`: no timeout).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// `limit`, or less when the step's timeout comes first.
    pub fn bounded(&self, limit: Duration) -> Duration {
        self.remaining().map_or(limit, |r| r.min(limit))
    }

    /// A step error: prefixed with the step, secrets redacted, pointing at the step in the tree file.
    pub fn fail(&self, kind: ErrorKind, message: impl AsRef<str>) -> BuildError {
        BuildError::new(kind, self.events.redact(&format!("{}: {}", self.label, message.as_ref()))).at(self.step.span)
    }

    /// The local path `source` names, resolved against its tree file; an error naming `what` and
    /// where it was named when it cannot be read (it may have gone since validation).
    pub fn readable_local(&self, source: &Spanned<String>, what: &str) -> Result<std::path::PathBuf, BuildError> {
        let local = self.tree().path(source);
        match std::fs::metadata(&local) {
            Ok(_) => Ok(local),
            Err(e) => Err(self
                .fail(
                    ErrorKind::Local,
                    format!(
                        "cannot read {what}{} (named at {}): {e}",
                        local.display(),
                        self.tree().locate(Span::new(source.span()))
                    ),
                )
                .at(Span::new(source.span()))),
        }
    }

    /// A communicator error in `doing` (e.g. "uploading the script").
    pub fn comm_fail(&self, doing: &str, e: &CommError) -> BuildError {
        let kind = match e {
            CommError::Timeout { .. } | CommError::ConnectTimeout { .. } => ErrorKind::Timeout,
            CommError::LocalFile { .. } => ErrorKind::Local,
            CommError::Command(_) => ErrorKind::Config,
            _ => ErrorKind::Communicator,
        };
        self.fail(kind, format!("{doing}: {e}"))
    }

    pub fn timed_out(&self, after: Duration) -> BuildError {
        self.fail(
            ErrorKind::Timeout,
            format!("timed out after {} (the step's `timeout`); its command was stopped", humantime_short(after)),
        )
    }

    /// A unique, recognisable file name for something this step puts on the machine.
    pub fn remote_name(&self, what: &str, ext: &str) -> String {
        let image: String =
            self.runner.cx.image.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("imgbake-{image}-{}-{what}-{}.{ext}", self.index, &id[..8])
    }

    pub fn breakpoint_info(&self, message: String) -> BreakpointInfo {
        BreakpointInfo {
            image: self.runner.cx.image.clone(),
            step: self.label.clone(),
            index: self.index,
            message,
            target: self.comm.target(),
            os: self.os(),
            key_file: self.runner.cx.key_file.clone(),
        }
    }
}

/// `2s`, `1m 30s`: short durations for messages.
pub(crate) fn humantime_short(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        assert_eq!(humantime_short(Duration::from_millis(250)), "250ms");
        assert_eq!(humantime_short(Duration::from_secs(2)), "2s");
        assert_eq!(humantime_short(Duration::from_secs(90)), "1m 30s");
        assert_eq!(humantime_short(Duration::from_secs(600)), "10m");
        assert_eq!(humantime_short(Duration::from_secs(3700)), "1h 1m");
    }
}
