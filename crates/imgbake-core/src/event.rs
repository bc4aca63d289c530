//! The event stream: every stage of imgbake reports what it does as typed [`Event`]s.
//!
//! The CLI's live view, the NDJSON writer (`--json`) and library users are all consumers of the same
//! stream. Producers hold an [`EventSink`], a cheap clonable handle that stamps each event with the
//! image and step it belongs to and redacts secrets from every text it carries.
//!
//! ```
//! use imgbake_core::event::{EventSink, EventKind, Stream};
//!
//! let (sink, log) = EventSink::memory();
//! let sink = sink.with_secrets(["hunter2".to_string()]);
//! sink.for_image("web").for_step("shell 1").output(Stream::Stdout, "password is hunter2");
//! let events = log.events();
//! assert_eq!(events[0].image.as_deref(), Some("web"));
//! match &events[0].kind {
//!     EventKind::Output { line, .. } => assert_eq!(line, "password is <sensitive>"),
//!     other => panic!("{other:?}"),
//! }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One thing that happened, with where it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The image (tree node) it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The step it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The phases of a build, in the order core runs them (see [`crate::builder`]); `cleanup` is the
/// unwinding of the journal afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Check what can be checked, make the build's keys and temporary resources' plans.
    Prepare,
    /// Temporary resources and the machine.
    Launch,
    /// Log in to the machine.
    Connect,
    /// Run the image's steps.
    Provision,
    /// Remove what the build installed on the machine.
    Sanitize,
    /// Stop the machine.
    Shutdown,
    /// Make the artifact.
    Capture,
    /// Copies, sharing, completion marks.
    Distribute,
    /// Remove what is left on the build's journal.
    Cleanup,
}

impl Phase {
    /// Its name in events (`prepare`, `launch`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Launch => "launch",
            Phase::Connect => "connect",
            Phase::Provision => "provision",
            Phase::Sanitize => "sanitize",
            Phase::Shutdown => "shutdown",
            Phase::Capture => "capture",
            Phase::Distribute => "distribute",
            Phase::Cleanup => "cleanup",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Phase {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Phase {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What happened. Serialised with an `"event"` tag, one JSON object per line in `--json` mode. Every
/// duration is a whole number of milliseconds (see [`millis`]).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The plan decided what to do with an image.
    Planned {
        /// `build`, `reuse` or `skip`.
        action: crate::plan::Action,
        /// Why, in words.
        reason: String,
    },
    /// A build of an image started.
    BuildStarted {
        /// The build id every resource of this build is tagged with.
        build_id: String,
        /// The builder kind (`aws`, `qemu`, ...).
        builder: String,
    },
    /// A build phase began (core emits them, in [`Phase`] order).
    Phase {
        /// The phase.
        phase: Phase,
    },
    /// A provisioning step started.
    StepStarted {
        /// Position in the image's step list, from 1.
        index: usize,
        /// The step kind (`shell`, `file`, ...).
        kind: String,
    },
    /// A provisioning step ended.
    StepFinished {
        /// Position in the image's step list, from 1.
        index: usize,
        /// How long it took (milliseconds).
        #[serde(with = "millis")]
        duration: Duration,
        /// `ok`, `skipped` or `failed`.
        outcome: crate::provision::StepOutcome,
    },
    /// A line of output of a remote or local command.
    Output {
        /// Stdout or stderr.
        stream: Stream,
        /// The line, without its newline, secrets redacted.
        line: String,
    },
    /// File transfer progress.
    Transfer {
        /// The path being transferred.
        path: String,
        /// Bytes done so far.
        done: u64,
        /// Total bytes, when known.
        total: Option<u64>,
    },
    /// Something being waited for changed state (an instance `pending` → `running`, ...).
    State {
        /// What is being waited for.
        what: String,
        /// Its new state.
        state: String,
    },
    /// A cloud or local resource was created (and registered for cleanup).
    ResourceCreated {
        /// Its kind (`aws.instance`, `aws.key_pair`, `qemu.process`...).
        kind: String,
        /// Its id.
        id: String,
        /// Its region or location, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// A resource was removed.
    ResourceDeleted {
        /// Its kind.
        kind: String,
        /// Its id.
        id: String,
        /// Its region or location, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// The communicator connected to the machine.
    Connected {
        /// Who it connected to (`admin@127.0.0.1:2222`).
        target: String,
        /// The machine's boot identity at that moment, if read.
        #[serde(skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
    },
    /// The connection was lost.
    Disconnected {
        /// Why, as far as known.
        reason: String,
    },
    /// The machine rebooted (its boot identity changed).
    Rebooted {
        /// The identity before.
        from: String,
        /// The identity after.
        to: String,
    },
    /// The machine is back and stable after a reboot (or chain of reboots).
    Settled {
        /// The final boot identity.
        boot_id: String,
        /// How many reboots were seen.
        reboots: u32,
        /// Time from the reboot request to settled (milliseconds).
        #[serde(with = "millis")]
        waited: Duration,
    },
    /// On-box test results.
    TestResults {
        /// Passed cases.
        passed: u32,
        /// Failed cases (including errors).
        failed: u32,
        /// Skipped cases.
        skipped: u32,
    },
    /// An artifact (AMI, disk image...) was produced.
    ArtifactCreated {
        /// Primary id (AMI id, file path).
        id: String,
        /// Where it lives (region, directory).
        location: String,
    },
    /// A build of an image ended.
    BuildFinished {
        /// `built`, `failed`, `skipped` (its parent failed) or `cancelled`.
        outcome: crate::schedule::Status,
        /// How long it took (milliseconds).
        #[serde(with = "millis")]
        duration: Duration,
        /// The error, when it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Informational message.
    Info {
        /// The message.
        message: String,
    },
    /// Something the user should know about but that does not stop the build.
    Warning {
        /// The message.
        message: String,
    },
}

/// The one duration encoding of imgbake's JSON output (events, the `--json` summary, the manifest's
/// steps and tests): a whole number of milliseconds. Use with `#[serde(with = "millis")]`;
/// [`millis::option`] for an `Option<Duration>` (`null` when absent).
pub mod millis {
    use serde::Serializer;
    use std::time::Duration;

    /// Milliseconds, saturating (no duration imgbake measures comes near `u64::MAX` ms).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The same for an optional duration.
    pub mod option {
        use serde::Serializer;
        use std::time::Duration;

        /// Milliseconds, or `null`.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Replaces secrets with `<sensitive>` in every text an event carries.
#[derive(Debug, Default)]
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), imgbake_config::REDACTED);
            }
        }
        out
    }
}

type Callback = Arc<dyn Fn(Event) + Send + Sync>;

#[derive(Clone)]
enum Target {
    Discard,
    Channel(mpsc::UnboundedSender<Event>),
    Callback(Callback),
}

/// A handle to emit events: clone it freely, narrow it with [`EventSink::for_image`] and
/// [`EventSink::for_step`].
#[derive(Clone)]
pub struct EventSink {
    target: Target,
    image: Option<Arc<str>>,
    step: Option<Arc<str>>,
    redactor: Arc<Redactor>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").field("image", &self.image).field("step", &self.step).finish()
    }
}

/// The receiving end of [`EventSink::channel`].
pub type EventStream = mpsc::UnboundedReceiver<Event>;

/// Events kept in memory, for tests and for library users that read them afterwards.
#[derive(Clone, Debug, Default)]
pub struct EventLog(Arc<Mutex<Vec<Event>>>);

impl EventLog {
    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every output line so far (both streams), in order.
    pub fn output_lines(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Output { line, .. } => Some(line),
                _ => None,
            })
            .collect()
    }
}

impl EventSink {
    /// A sink that drops everything.
    pub fn discard() -> Self {
        Self::with_target(Target::Discard)
    }

    /// A sink and the stream that receives its events.
    pub fn channel() -> (Self, EventStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self::with_target(Target::Channel(tx)), rx)
    }

    /// A sink that calls `f` for every event (on the emitting task: keep it quick).
    pub fn callback(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Self::with_target(Target::Callback(Arc::new(f)))
    }

    /// A sink that keeps every event in memory.
    pub fn memory() -> (Self, EventLog) {
        let log = EventLog::default();
        let keep = log.clone();
        let sink = Self::callback(move |e| {
            if let Ok(mut v) = keep.0.lock() {
                v.push(e);
            }
        });
        (sink, log)
    }

    fn with_target(target: Target) -> Self {
        EventSink { target, image: None, step: None, redactor: Arc::default() }
    }

    /// The same sink, stamping events with `image`.
    pub fn for_image(&self, image: &str) -> Self {
        EventSink { image: Some(image.into()), step: None, ..self.clone() }
    }

    /// The same sink, stamping events with `step`.
    pub fn for_step(&self, step: &str) -> Self {
        EventSink { step: Some(step.into()), ..self.clone() }
    }

    /// The same sink, also redacting these secrets (empty strings are ignored).
    pub fn with_secrets(&self, secrets: impl IntoIterator<Item = String>) -> Self {
        let mut all = self.redactor.secrets.clone();
        all.extend(secrets.into_iter().filter(|s| !s.is_empty()));
        // Longest first, so a secret that contains another is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        EventSink { redactor: Arc::new(Redactor { secrets: all }), ..self.clone() }
    }

    /// Redact the secrets this sink knows from `text`.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The image this sink stamps, if any.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// Emit an event (texts are redacted here).
    pub fn emit(&self, kind: EventKind) {
        if matches!(self.target, Target::Discard) {
            return;
        }
        let kind = self.redact_kind(kind);
        let event = Event {
            at: Utc::now(),
            image: self.image.as_deref().map(str::to_string),
            step: self.step.as_deref().map(str::to_string),
            kind,
        };
        match &self.target {
            Target::Discard => {}
            // A closed receiver means nobody listens any more; events are not worth failing a build.
            Target::Channel(tx) => {
                let _ = tx.send(event);
            }
            Target::Callback(f) => f(event),
        }
    }

    fn redact_kind(&self, kind: EventKind) -> EventKind {
        if self.redactor.secrets.is_empty() {
            return kind;
        }
        let r = |s: String| self.redactor.redact(&s);
        match kind {
            EventKind::Output { stream, line } => EventKind::Output { stream, line: r(line) },
            EventKind::Info { message } => EventKind::Info { message: r(message) },
            EventKind::Warning { message } => EventKind::Warning { message: r(message) },
            EventKind::BuildFinished { outcome, duration, error } => {
                EventKind::BuildFinished { outcome, duration, error: error.map(r) }
            }
            EventKind::Disconnected { reason } => EventKind::Disconnected { reason: r(reason) },
            other => other,
        }
    }

    /// Emit a line of command output.
    pub fn output(&self, stream: Stream, line: &str) {
        self.emit(EventKind::Output { stream, line: line.to_string() });
    }

    /// Emit an informational message.
    pub fn info(&self, message: impl Into<String>) {
        self.emit(EventKind::Info { message: message.into() });
    }

    /// Emit a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(EventKind::Warning { message: message.into() });
    }

    /// Emit a state change of something being waited for.
    pub fn state(&self, what: &str, state: &str) {
        self.emit(EventKind::State { what: what.to_string(), state: state.to_string() });
    }
}

/// Splits a byte stream into lines for [`EventKind::Output`], keeping a partial last line until more
/// bytes or the end arrive. Invalid UTF-8 is replaced, never an error.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; returns the complete lines they finish (without `\n` or `\r\n`).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(Self::finish(std::mem::take(&mut self.partial)));
            } else {
                self.partial.push(b);
            }
        }
        lines
    }

    /// The last line if the stream ended without a newline.
    pub fn flush(&mut self) -> Option<String> {
        if self.partial.is_empty() { None } else { Some(Self::finish(std::mem::take(&mut self.partial))) }
    }

    fn finish(mut line: Vec<u8>) -> String {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let (sink, log) = EventSink::memory();
        sink.for_image("base").emit(EventKind::StepFinished {
            index: 2,
            duration: Duration::from_millis(1500),
            outcome: crate::provision::StepOutcome::Ok,
        });
        let v = serde_json::to_value(&log.events()[0]).unwrap();
        assert_eq!(v["event"], "step_finished");
        assert_eq!(v["image"], "base");
        assert_eq!(v["duration"], 1500);
        assert_eq!(v["outcome"], "ok");
        assert!(v.get("step").is_none());
    }

    #[test]
    fn longest_secret_wins_and_errors_are_redacted() {
        let (sink, log) = EventSink::memory();
        let sink = sink.with_secrets(["abc".into(), "abcdef".into(), String::new()]);
        sink.output(Stream::Stderr, "x abcdef y abc");
        sink.emit(EventKind::BuildFinished {
            outcome: crate::schedule::Status::Failed,
            duration: Duration::ZERO,
            error: Some("bad abc".into()),
        });
        let lines = log.output_lines();
        assert_eq!(lines, vec!["x <sensitive> y <sensitive>"]);
        match &log.events()[1].kind {
            EventKind::BuildFinished { error, .. } => assert_eq!(error.as_deref(), Some("bad <sensitive>")),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn splitter_handles_partial_lines_and_crlf() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\r\ntw"), vec!["one"]);
        assert_eq!(s.push(b"o\nthree"), vec!["two"]);
        assert_eq!(s.flush().as_deref(), Some("three"));
        assert_eq!(s.flush(), None);
        assert_eq!(s.push(&[0xff, b'\n']), vec!["\u{fffd}"]);
    }
}
