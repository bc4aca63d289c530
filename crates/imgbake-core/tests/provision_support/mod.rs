//! Shared by the provision_* tests: trees written to temp dirs, runners, a scripted person, the bed's
//! servers as communicators, and checks over the event log.
#![allow(dead_code)] // each test binary uses a part

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use imgbake_config::{LoadOptions, Tree};
use imgbake_core::event::{Event, EventKind, EventLog, EventSink};
use imgbake_core::provision::{BreakpointInfo, FailureChoice, Interaction, StepContext, StepFailure, StepRunner};
use imgbake_core::wait::Wait;
use imgbake_ssh::{Auth, HostKeyPolicy, SshCommunicator, SshConfig};
use imgbake_testbed::SshTarget;

/// The value of the tree's sensitive variable `secret`: it must never show up anywhere.
pub const SECRET: &str = "pa55-Wurd-7f3c91";

/// A tree in a temp dir: `tree.toml` with one image `box` (builders aws and qemu) whose steps are
/// `steps` (TOML `[[images.box.steps]]` tables), plus `files` (relative path, content). `@DIR@` in the
/// steps stands for the temp dir (the bed's sshd runs on this machine, so it is a remote path too).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub tree: Arc<Tree>,
}

impl Fixture {
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

pub fn fixture(steps: &str, files: &[(&str, &str)]) -> Fixture {
    fixture_with("", steps, files)
}

/// Like [`fixture`], with extra keys for `[images.box.communicator]` (e.g. `execute_command = "..."`).
pub fn fixture_with(communicator: &str, steps: &str, files: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let steps = steps.replace("@DIR@", &dir.path().display().to_string());
    std::fs::create_dir_all(dir.path().join("remote")).unwrap();
    std::fs::write(dir.path().join("disk.raw"), b"").unwrap();
    for (rel, content) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    let toml = format!(
        r#"
[settings]
id = "provision-test-0001"

[variables]
secret = {{ default = "{SECRET}", sensitive = true }}

[images.box]
builder = ["aws", "qemu"]
source = {{ ami = "ami-0123456789abcdef0", disk = "disk.raw" }}
aws = {{ region = "eu-west-1" }}

[images.box.communicator]
username = "root"
{communicator}

{steps}
"#
    );
    std::fs::write(dir.path().join("tree.toml"), toml).unwrap();
    // Two builders, by name only: these tests drive steps, not builders.
    let schemas = imgbake_config::Schemas::new()
        .with(imgbake_config::schema::Open::new("aws", &["ami"]).arc())
        .with(imgbake_config::schema::Open::new("qemu", &["disk"]).arc());
    let opts = LoadOptions { env: Default::default(), schemas, ..LoadOptions::default() };
    let tree = Tree::load(&dir.path().join("tree.toml"), &opts).unwrap_or_else(|e| panic!("tree does not load:\n{e}"));
    Fixture { dir, tree: Arc::new(tree) }
}

/// What the scripted person did.
#[derive(Default)]
pub struct Script {
    pub breakpoints: Mutex<Vec<BreakpointInfo>>,
    pub failures: Mutex<Vec<StepFailure>>,
    pub choices: Mutex<VecDeque<FailureChoice>>,
    pub interactive: bool,
}

#[async_trait]
impl Interaction for Script {
    fn is_interactive(&self) -> bool {
        self.interactive
    }

    async fn breakpoint(&self, info: BreakpointInfo) {
        self.breakpoints.lock().unwrap().push(info);
    }

    async fn on_failure(&self, failure: &StepFailure) -> FailureChoice {
        self.failures.lock().unwrap().push(failure.clone());
        self.choices.lock().unwrap().pop_front().unwrap_or(FailureChoice::Cleanup)
    }
}

/// A runner for image `box` with builder `builder`, its events kept in memory.
pub fn new_runner(fx: &Fixture, builder: &str) -> (StepRunner, EventLog) {
    new_runner_with(fx, builder, |_| {})
}

pub fn new_runner_with(fx: &Fixture, builder: &str, adjust: impl FnOnce(&mut StepContext)) -> (StepRunner, EventLog) {
    let (events, log) = EventSink::memory();
    let mut cx = StepContext::new(fx.tree.clone(), "box", builder, events);
    cx.values.insert("IMGBAKE_BUILD_ID".into(), "b-0001".into());
    cx.report_dir = Some(fx.path("reports"));
    adjust(&mut cx);
    // Retries in tests should not wait long.
    let r = StepRunner::new(cx).with_retry_interval(Duration::from_millis(50), Duration::from_millis(200));
    (r, log)
}

/// A communicator for a bed server: its client key, its pinned host key.
pub fn communicator(t: &impl SshTarget) -> SshCommunicator {
    let config = SshConfig::new(t.host(), t.port(), t.user())
        .with_auth(Auth::key_file(t.client_key_path()))
        .with_host_key(HostKeyPolicy::Pinned(vec![t.host_public_key().to_string()]));
    SshCommunicator::new(config)
}

pub fn quick() -> Wait {
    Wait::new(Duration::from_secs(30)).interval(Duration::from_millis(50), Duration::from_millis(500))
}

/// Every text an event carries, for "the secret is nowhere" checks.
pub fn all_text(events: &[Event]) -> String {
    events.iter().map(|e| serde_json::to_string(e).unwrap()).collect::<Vec<_>>().join("\n")
}

/// Lines a login shell on this machine adds to every command's stderr: the bed's sshd logs in as root,
/// whose ~/.bashrc runs `pyenv init` (which prints lock warnings when many shells start at once).
fn shell_noise(line: &str) -> bool {
    line.starts_with("pyenv: ") || line.contains("/.pyenv/")
}

/// Every output line (both streams), in order.
pub fn output(log: &EventLog) -> Vec<String> {
    log.output_lines().into_iter().filter(|l| !shell_noise(l)).collect()
}

/// Output lines of one step.
pub fn step_output(log: &EventLog, step: &str) -> Vec<String> {
    log.events()
        .into_iter()
        .filter(|e| e.step.as_deref() == Some(step))
        .filter_map(|e| match e.kind {
            EventKind::Output { line, .. } if !shell_noise(&line) => Some(line),
            _ => None,
        })
        .collect()
}

pub fn warnings(log: &EventLog) -> Vec<String> {
    log.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Warning { message } => Some(message),
            _ => None,
        })
        .collect()
}

pub fn infos(log: &EventLog) -> Vec<String> {
    log.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Info { message } => Some(message),
            _ => None,
        })
        .collect()
}

/// (index, outcome) of every StepFinished event.
pub fn finished(log: &EventLog) -> Vec<(usize, String)> {
    log.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::StepFinished { index, outcome, .. } => Some((index, outcome.as_str().to_string())),
            _ => None,
        })
        .collect()
}

/// Files of a remote-side directory whose names start with `prefix` (on the bed's sshd, "remote" is
/// this machine).
pub fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}
