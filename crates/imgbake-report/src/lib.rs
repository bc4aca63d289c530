//! imgbake's build report: `imgbake build TREE --report report.html` writes one self-contained HTML
//! file about the run — the tree drawn as a graph with each image's status (by colour *and* text),
//! a table of every image and builder, the time each build spent in each phase, steps and test
//! results (failing tests by name), artifacts with their id per location, errors and the end of a
//! failed build's output, and what was left behind.
//!
//! The file loads nothing: styles are inline, the pictures are inline SVG, there is no script, and a
//! Content-Security-Policy forbids every request, so it can be kept as a CI artifact and opened
//! anywhere. Every text in it is redacted with the tree's secrets (like every other output of
//! imgbake) and escaped, so image names, step output and error messages cannot inject markup.
//!
//! The report is made from what any library user has: the tree's shape ([`Node`]s, or
//! [`Report::for_tree`]), the events of the run ([`Recorder`] keeps them in bounded memory) and the
//! [`RunSummary`]. A run that failed or was interrupted before it produced a summary still gets a
//! report: statuses then come from the events, and [`Report::note`] says what happened.
//!
//! ```
//! use std::time::Duration;
//! use imgbake_core::event::{EventKind, EventSink, Phase};
//! use imgbake_core::schedule::{ImageResult, RunSummary, Status};
//! use imgbake_report::{Node, Recorder, Report};
//!
//! // The events of a run (a real run emits them through the sink given to `schedule::run`).
//! let (sink, log) = EventSink::memory();
//! let base = sink.for_image("base");
//! base.emit(EventKind::BuildStarted { build_id: "b1".into(), builder: "aws".into() });
//! base.emit(EventKind::Phase { phase: Phase::Launch });
//! base.emit(EventKind::BuildFinished { outcome: Status::Failed, duration: Duration::from_secs(3), error: None });
//! let recorder = Recorder::new();
//! for e in log.events() {
//!     recorder.push(&e);
//! }
//!
//! // Its summary, by hand here.
//! let result = |image: &str, status| ImageResult {
//!     image: image.into(), builder: "aws".into(), status, artifact: None, reasons: vec![],
//!     error: None, error_location: None, error_span: None, started: None, duration: None,
//!     published: vec![], report: None,
//! };
//! let mut failed = result("base", Status::Failed);
//! failed.error = Some("step `install <nginx>` failed: exit 3 (password hunter2)".into());
//! let summary = RunSummary {
//!     build_id: "b1".into(),
//!     results: vec![failed, result("web", Status::Skipped)],
//!     manifest: None,
//!     leftovers: vec![],
//! };
//!
//! let events = recorder.events();
//! let nodes = vec![Node::new("base", None, "aws"), Node::new("web", Some("base"), "aws")];
//! let html = Report::new("demo", nodes, &events).summary(&summary).secrets(["hunter2".to_string()]).render();
//! assert!(html.contains(r#"data-image="web" data-status="skipped""#));
//! assert!(html.contains("install &lt;nginx&gt;"), "text is escaped");
//! assert!(!html.contains("hunter2"), "secrets are redacted");
//! assert!(!html.contains("<script"), "and nothing runs or loads");
//! ```

#![warn(missing_docs)]

mod html;
pub mod layout;
mod model;
mod record;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use imgbake_config::Tree;
use imgbake_core::event::Event;
use imgbake_core::schedule::RunSummary;

pub use html::{escape, strip_controls};
pub use model::{Node, Outcome};
pub use record::{OUTPUT_TAIL, Recorder};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing the temporary file next to the report failed.
    #[error(
        "cannot write the report {}: {source} (writing {}; check that the directory exists and is writable)",
        path.display(),
        tmp.display()
    )]
    Write {
        /// The report's path.
        path: PathBuf,
        /// The temporary file being written.
        tmp: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Moving the finished temporary file into place failed.
    #[error("cannot put the report in place at {}: {source} (is it a directory?)", path.display())]
    Rename {
        /// The report's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A report of one run: build it, then [`Report::render`] or [`Report::write`].
#[derive(Clone, Debug)]
pub struct Report<'a> {
    title: String,
    nodes: Vec<Node>,
    events: &'a [Event],
    summary: Option<&'a RunSummary>,
    secrets: Vec<String>,
    note: Option<String>,
    finished: Option<DateTime<Utc>>,
}

impl<'a> Report<'a> {
    /// A report titled `title` of the images `nodes` (tree order: parents first), from `events`.
    pub fn new(title: impl Into<String>, nodes: Vec<Node>, events: &'a [Event]) -> Self {
        Report { title: title.into(), nodes, events, summary: None, secrets: Vec::new(), note: None, finished: None }
    }

    /// A report of `tree`'s images, titled with its name, redacting its sensitive variables.
    pub fn for_tree(tree: &Tree, events: &'a [Event]) -> Self {
        let nodes = tree
            .order()
            .into_iter()
            .filter_map(|name| tree.image(name))
            .map(|img| Node {
                name: img.name.clone(),
                parent: img.parent.as_ref().map(|p| p.get_ref().clone()),
                builders: img.builders.iter().map(|b| b.get_ref().clone()).collect(),
            })
            .collect();
        Report::new(tree.name(), nodes, events).secrets(tree.secrets())
    }

    /// The run's results (without them, statuses come from the events alone).
    pub fn summary(mut self, summary: &'a RunSummary) -> Self {
        self.summary = Some(summary);
        self
    }

    /// Also redact these values (added to any given before).
    pub fn secrets(mut self, secrets: impl IntoIterator<Item = String>) -> Self {
        self.secrets.extend(secrets);
        self
    }

    /// A note shown at the top: why the run ended early ("interrupted", "planning failed: …").
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// When the run ended (default: when the report is rendered).
    pub fn finished_at(mut self, at: DateTime<Utc>) -> Self {
        self.finished = Some(at);
        self
    }

    /// The HTML page.
    pub fn render(&self) -> String {
        let images = model::images(&self.nodes, self.events, self.summary);
        let finished = self.finished.unwrap_or_else(Utc::now);
        let started = self
            .events
            .iter()
            .map(|e| e.at)
            .chain(self.summary.iter().flat_map(|s| s.results.iter().filter_map(|r| r.started)))
            .min();
        let page = html::Page {
            title: &self.title,
            build_id: self.summary.map(|s| s.build_id.as_str()).or_else(|| {
                self.events.iter().find_map(|e| match &e.kind {
                    imgbake_core::event::EventKind::BuildStarted { build_id, .. } => Some(build_id.as_str()),
                    _ => None,
                })
            }),
            started,
            finished,
            note: self.note.as_deref(),
            manifest: self.summary.and_then(|s| s.manifest.as_ref()).map(|m| m.display().to_string()),
            leftovers: self.summary.map(|s| s.leftovers.iter().map(|l| l.describe()).collect()).unwrap_or_default(),
            summary_ok: self.summary.map(RunSummary::ok),
        };
        html::render(&page, &images, &html::Text::new(self.secrets.clone()))
    }

    /// Renders the page and writes it to `path` atomically: a reader (or a crash) never sees half a
    /// report, and an older report stays until the new one is complete.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        write_atomic(path, self.render().as_bytes())
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(ReportError::Write { path: path.to_path_buf(), tmp, source });
    }
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ReportError::Rename { path: path.to_path_buf(), source });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
