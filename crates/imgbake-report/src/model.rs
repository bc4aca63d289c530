//! What the report shows, gathered from the run summary and the recorded events.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imgbake_core::artifact::Artifact;
use imgbake_core::event::{Event, EventKind, Phase, Stream};
use imgbake_core::provision::ProvisionReport;
use imgbake_core::schedule::{ImageResult, RunSummary, Status};

/// How one build of an image ended, as the report says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Built in this run.
    Built,
    /// An up-to-date artifact was reused.
    Reused,
    /// The build failed.
    Failed,
    /// Not built: not selected, or its parent failed.
    Skipped,
    /// Interrupted.
    Cancelled,
    /// Started, but the run ended before it finished (only without a run summary).
    Unfinished,
    /// The run never got to it (planning failed or was interrupted).
    NotRun,
}

impl Outcome {
    /// The word shown in the report (and its `data-status` attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Built => "built",
            Outcome::Reused => "reused",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
            Outcome::Unfinished => "unfinished",
            Outcome::NotRun => "not run",
        }
    }

    /// A mark shown beside the word, so the status does not rest on colour alone.
    pub fn mark(self) -> &'static str {
        match self {
            Outcome::Built => "✓",
            Outcome::Reused => "↺",
            Outcome::Failed => "✗",
            Outcome::Skipped => "–",
            Outcome::Cancelled => "⊘",
            Outcome::Unfinished => "…",
            Outcome::NotRun => "·",
        }
    }

    /// The CSS class of its colours.
    pub fn class(self) -> &'static str {
        match self {
            Outcome::NotRun => "not-run",
            other => other.as_str(),
        }
    }

    /// How bad it is, for an image's overall status (its worst build).
    fn severity(self) -> u8 {
        match self {
            Outcome::Failed => 6,
            Outcome::Cancelled => 5,
            Outcome::Unfinished => 4,
            Outcome::Skipped => 3,
            Outcome::NotRun => 2,
            Outcome::Built => 1,
            Outcome::Reused => 0,
        }
    }
}

impl From<Status> for Outcome {
    fn from(s: Status) -> Self {
        match s {
            Status::Built => Outcome::Built,
            Status::Reused => Outcome::Reused,
            Status::Failed => Outcome::Failed,
            Status::Skipped => Outcome::Skipped,
            Status::Cancelled => Outcome::Cancelled,
        }
    }
}

/// One phase of one build, from its `phase` event to the next one (or the build's end).
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSpan {
    /// The phase.
    pub phase: Phase,
    /// When it began.
    pub start: DateTime<Utc>,
    /// When it ended; `None` when the run ended first.
    pub end: Option<DateTime<Utc>>,
}

impl PhaseSpan {
    /// How long it took (up to `now` while unfinished).
    pub fn duration(&self, now: DateTime<Utc>) -> Duration {
        (self.end.unwrap_or(now) - self.start).to_std().unwrap_or_default()
    }
}

/// One build of an image (an image with two builders has two).
#[derive(Clone, Debug)]
pub struct BuildView<'a> {
    /// The builder.
    pub builder: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The summary's result, when the run produced one.
    pub result: Option<&'a ImageResult>,
    /// Its phases, in order.
    pub phases: Vec<PhaseSpan>,
    /// Set when several builds of the image overlapped: events do not say which build a phase
    /// belongs to, so no phase is attributed.
    pub phases_ambiguous: bool,
    /// When it started and ended, from its events.
    pub started: Option<DateTime<Utc>>,
    /// When it finished, from its events.
    pub finished: Option<DateTime<Utc>>,
    /// The error of its `build_finished` event (without a summary).
    pub error: Option<String>,
}

impl BuildView<'_> {
    /// Its artifact (built or reused).
    pub fn artifact(&self) -> Option<&Artifact> {
        self.result.and_then(|r| r.artifact.as_ref())
    }

    /// Steps and tests.
    pub fn provision(&self) -> Option<&ProvisionReport> {
        self.result.and_then(|r| r.report.as_ref())
    }

    /// The error, from the summary, else from the events.
    pub fn error(&self) -> Option<&str> {
        self.result.and_then(|r| r.error.as_deref()).or(self.error.as_deref())
    }

    /// How long it took.
    pub fn duration(&self) -> Option<Duration> {
        self.result
            .and_then(|r| r.duration)
            .or_else(|| Some((self.finished? - self.started?).to_std().unwrap_or_default()))
    }
}

/// One image: its builds, warnings and the end of its output.
#[derive(Clone, Debug)]
pub struct ImageView<'a> {
    /// Its name.
    pub name: String,
    /// Its parent, if any.
    pub parent: Option<String>,
    /// One per builder.
    pub builds: Vec<BuildView<'a>>,
    /// Its warnings.
    pub warnings: Vec<String>,
    /// The last output lines recorded for it (stderr marked).
    pub output: Vec<(Stream, String)>,
    /// What the plan said (without a summary).
    pub planned: Option<String>,
}

impl ImageView<'_> {
    /// The worst outcome of its builds.
    pub fn outcome(&self) -> Outcome {
        self.builds.iter().map(|b| b.outcome).max_by_key(|o| o.severity()).unwrap_or(Outcome::NotRun)
    }
}

/// An image of the tree: what the graph draws before any result is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The image's name.
    pub name: String,
    /// Its parent's name.
    pub parent: Option<String>,
    /// Its builders, in the tree's order.
    pub builders: Vec<String>,
}

impl Node {
    /// An image built by `builder`, with an optional parent.
    pub fn new(name: impl Into<String>, parent: Option<&str>, builder: impl Into<String>) -> Self {
        Node { name: name.into(), parent: parent.map(str::to_string), builders: vec![builder.into()] }
    }
}

/// A build of one image, while its events are walked.
struct Run {
    builder: String,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    outcome: Option<Outcome>,
    error: Option<String>,
    phases: Vec<PhaseSpan>,
}

/// Splits an image's events into its builds and their phases.
fn runs_of(events: &[&Event]) -> (Vec<Run>, bool) {
    let mut runs: Vec<Run> = Vec::new();
    let mut ambiguous = false;
    let open = |runs: &Vec<Run>| runs.iter().enumerate().filter(|(_, r)| r.end.is_none()).map(|(i, _)| i).collect();
    for e in events {
        match &e.kind {
            EventKind::BuildStarted { builder, .. } => runs.push(Run {
                builder: builder.clone(),
                start: e.at,
                end: None,
                outcome: None,
                error: None,
                phases: Vec::new(),
            }),
            EventKind::Phase { phase } => {
                let open: Vec<usize> = open(&runs);
                match open.as_slice() {
                    [i] => {
                        let run = &mut runs[*i];
                        if let Some(last) = run.phases.last_mut() {
                            last.end = Some(e.at);
                        }
                        run.phases.push(PhaseSpan { phase: *phase, start: e.at, end: None });
                    }
                    [] => {}
                    _ => ambiguous = true,
                }
            }
            EventKind::BuildFinished { outcome, error, .. } => {
                let open: Vec<usize> = open(&runs);
                match open.as_slice() {
                    [i] => {
                        let run = &mut runs[*i];
                        run.end = Some(e.at);
                        run.outcome = Some((*outcome).into());
                        run.error = error.clone();
                        if let Some(last) = run.phases.last_mut() {
                            last.end = Some(e.at);
                        }
                    }
                    [] => {}
                    _ => ambiguous = true,
                }
            }
            _ => {}
        }
    }
    (runs, ambiguous)
}

/// Gathers every image's view: in the order of `nodes`, then any image only the summary or the
/// events know.
pub fn images<'a>(nodes: &[Node], events: &'a [Event], summary: Option<&'a RunSummary>) -> Vec<ImageView<'a>> {
    let mut order: Vec<(String, Option<String>, Vec<String>)> =
        nodes.iter().map(|n| (n.name.clone(), n.parent.clone(), n.builders.clone())).collect();
    let known = |order: &Vec<(String, Option<String>, Vec<String>)>, name: &str| order.iter().any(|o| o.0 == name);
    for r in summary.map(|s| s.results.as_slice()).unwrap_or_default() {
        if !known(&order, &r.image) {
            let parent = r.artifact.as_ref().and_then(|a| a.parent.clone());
            order.push((r.image.clone(), parent, vec![r.builder.clone()]));
        }
    }
    for e in events {
        if let Some(i) = &e.image
            && !known(&order, i)
        {
            order.push((i.clone(), None, Vec::new()));
        }
    }

    let mut by_image: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in events {
        if let Some(i) = &e.image {
            by_image.entry(i.as_str()).or_default().push(e);
        }
    }
    order
        .into_iter()
        .map(|(name, parent, builders)| {
            let evs = by_image.get(name.as_str()).cloned().unwrap_or_default();
            let (mut runs, ambiguous) = runs_of(&evs);
            let results: Vec<&ImageResult> =
                summary.map(|s| s.results.iter().filter(|r| r.image == name).collect()).unwrap_or_default();
            let mut builder_list: Vec<String> = results.iter().map(|r| r.builder.clone()).collect();
            for b in builders.iter().chain(runs.iter().map(|r| &r.builder)) {
                if !builder_list.contains(b) {
                    builder_list.push(b.clone());
                }
            }
            let builds = builder_list
                .into_iter()
                .map(|builder| {
                    let result = results.iter().copied().find(|r| r.builder == builder);
                    let run = runs.iter().position(|r| r.builder == builder).map(|i| runs.remove(i));
                    let outcome = match (result, &run) {
                        (Some(r), _) => r.status.into(),
                        (None, Some(run)) => run.outcome.unwrap_or(Outcome::Unfinished),
                        (None, None) => Outcome::NotRun,
                    };
                    BuildView {
                        builder,
                        outcome,
                        result,
                        phases: if ambiguous {
                            Vec::new()
                        } else {
                            run.as_ref().map(|r| r.phases.clone()).unwrap_or_default()
                        },
                        phases_ambiguous: ambiguous,
                        started: run.as_ref().map(|r| r.start),
                        finished: run.as_ref().and_then(|r| r.end),
                        error: run.and_then(|r| r.error),
                    }
                })
                .collect();
            let warnings = evs
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Warning { message } => Some(message.clone()),
                    _ => None,
                })
                .collect();
            let output = evs
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Output { stream, line } => Some((*stream, line.clone())),
                    _ => None,
                })
                .collect();
            let planned = evs.iter().rev().find_map(|e| match &e.kind {
                EventKind::Planned { action, reason } => Some(format!("{action}: {reason}")),
                _ => None,
            });
            ImageView { name, parent, builds, warnings, output, planned }
        })
        .collect()
}
