//! Rendering the event stream: a live view per image on a terminal, plain prefixed lines otherwise,
//! NDJSON with `--json`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use imgbake::core::event::{Event, EventKind, EventStream, Stream};
use imgbake::core::provision::StepOutcome;
use imgbake::core::schedule::Status;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How events are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One live line per running image (a terminal, colours allowed).
    Live,
    /// Plain `[image] ...` lines on stderr.
    Plain { timestamps: bool },
    /// One JSON object per event on stdout.
    Json,
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{:.1}s", d.as_secs_f64()) }
}

/// The mark of a finished build in the live view.
fn mark(outcome: Status) -> &'static str {
    match outcome {
        Status::Built | Status::Reused => "✓",
        Status::Skipped => "·",
        Status::Failed | Status::Cancelled => "✗",
    }
}

/// One line for an event, or `None` for events not worth a line of their own.
fn describe(e: &Event) -> Option<String> {
    let step = e.step.as_deref().unwrap_or("");
    Some(match &e.kind {
        EventKind::Planned { action, reason } => format!("plan: {action} ({reason})"),
        EventKind::BuildStarted { build_id, builder } => format!("build started ({builder}, build id {build_id})"),
        EventKind::Phase { phase } => phase.to_string(),
        EventKind::StepStarted { .. } => format!("→ {step}"),
        EventKind::StepFinished { duration, outcome, .. } => {
            format!("{} {step} ({})", if *outcome == StepOutcome::Ok { "✓" } else { "✗" }, secs(*duration))
        }
        EventKind::Output { stream, line } => {
            let mark = if *stream == Stream::Stderr { "!" } else { "|" };
            if step.is_empty() { format!("{mark} {line}") } else { format!("{step} {mark} {line}") }
        }
        // Progress lines only in the live view; a log gets the end of each transfer.
        EventKind::Transfer { path, done, total: Some(total) } if done == total => {
            format!("transferred {path} ({:.1} MB)", *done as f64 / 1e6)
        }
        EventKind::Transfer { .. } => return None,
        EventKind::State { what, state } => format!("{what}: {state}"),
        EventKind::ResourceCreated { kind, id, region } => {
            format!("created {kind} {id}{}", region.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())
        }
        EventKind::ResourceDeleted { kind, id, region } => {
            format!("removed {kind} {id}{}", region.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())
        }
        EventKind::Connected { target, boot_id } => {
            format!("connected to {target}{}", boot_id.as_ref().map(|b| format!(" (boot {b})")).unwrap_or_default())
        }
        EventKind::Disconnected { reason } => format!("disconnected: {reason}"),
        EventKind::Rebooted { from, to } => format!("rebooted (boot {from} → {to})"),
        EventKind::Settled { reboots, waited, .. } => {
            format!("back and settled after {reboots} reboot(s) in {}", secs(*waited))
        }
        EventKind::TestResults { passed, failed, skipped } => {
            format!("tests: {passed} passed, {failed} failed, {skipped} skipped")
        }
        EventKind::ArtifactCreated { id, location } => format!("artifact {id} ({location})"),
        EventKind::BuildFinished { outcome, duration, error } => match error {
            Some(err) => format!("{outcome} after {}: {err}", secs(*duration)),
            None => format!("{outcome} in {}", secs(*duration)),
        },
        EventKind::Info { message } => message.clone(),
        EventKind::Warning { message } => format!("warning: {message}"),
        _ => return None,
    })
}

/// How often a log (no live view) says how a long transfer is going.
const TRANSFER_EVERY: Duration = Duration::from_secs(10);

/// Progress of long transfers for logs: a line every [`TRANSFER_EVERY`] while one runs (CI logs
/// would otherwise show nothing between "prepare" and the end of a 10-minute download).
#[derive(Default)]
struct TransferLog {
    /// Per path: when it started, and when it was last said.
    running: HashMap<String, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
}

impl TransferLog {
    fn line(&mut self, e: &Event) -> Option<String> {
        let EventKind::Transfer { path, done, total } = &e.kind else { return None };
        if total.is_some_and(|t| *done >= t) {
            self.running.remove(path);
            return None;
        }
        let (started, said) = *self.running.entry(path.clone()).or_insert((e.at, e.at));
        let every = chrono::Duration::from_std(TRANSFER_EVERY).unwrap_or_default();
        if e.at - said < every {
            return None;
        }
        self.running.insert(path.clone(), (started, e.at));
        let secs = (e.at - started).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = *done as f64 / 1e6 / secs;
        Some(match total {
            Some(t) if *t > 0 => format!(
                "transferring {path}: {}% ({:.1} of {:.1} MB, {rate:.1} MB/s)",
                done * 100 / t,
                *done as f64 / 1e6,
                *t as f64 / 1e6
            ),
            _ => format!("transferring {path}: {:.1} MB ({rate:.1} MB/s)", *done as f64 / 1e6),
        })
    }
}

/// Consume events until the stream ends.
pub async fn render(mode: Mode, mut rx: EventStream) {
    match mode {
        Mode::Json => {
            let stdout = std::io::stdout();
            while let Some(e) = rx.recv().await {
                if let Ok(line) = serde_json::to_string(&e) {
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        Mode::Plain { timestamps } => {
            let mut transfers = TransferLog::default();
            while let Some(e) = rx.recv().await {
                let Some(text) = transfers.line(&e).or_else(|| describe(&e)) else { continue };
                let prefix = e.image.as_deref().map(|i| format!("[{i}] ")).unwrap_or_default();
                if timestamps {
                    eprintln!("{} {prefix}{text}", e.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
                } else {
                    eprintln!("{prefix}{text}");
                }
            }
        }
        Mode::Live => live(rx).await,
    }
}

async fn live(mut rx: EventStream) {
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {elapsed:>4} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut steps: HashMap<String, String> = HashMap::new();
    let width = PREFIX_WIDTH;
    while let Some(e) = rx.recv().await {
        let Some(image) = e.image.clone() else {
            if let Some(t) = describe(&e) {
                let _ = mp.println(t);
            }
            continue;
        };
        match &e.kind {
            EventKind::BuildStarted { .. } => {
                let bar = mp.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(format!("{image:width$}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message("starting");
                bars.insert(image, bar);
            }
            EventKind::BuildFinished { .. } => {
                if let Some(bar) = bars.remove(&image) {
                    bar.finish_and_clear();
                    mp.remove(&bar);
                }
                if let (EventKind::BuildFinished { outcome, .. }, Some(t)) = (&e.kind, describe(&e)) {
                    let _ = mp.println(format!("{} {image:width$} {t}", mark(*outcome)));
                }
            }
            EventKind::StepStarted { .. } => {
                let s = e.step.clone().unwrap_or_default();
                if let Some(bar) = bars.get(&image) {
                    bar.set_message(s.clone());
                }
                steps.insert(image, s);
            }
            EventKind::Transfer { path, done, total } => {
                if let Some(bar) = bars.get(&image) {
                    let of = match total {
                        Some(t) if *t > 0 => format!("{}% of {:.1} MB", done * 100 / t, *t as f64 / 1e6),
                        _ => format!("{:.1} MB", *done as f64 / 1e6),
                    };
                    bar.set_message(format!("{} {of}", path.rsplit('/').next().unwrap_or(path)));
                }
            }
            EventKind::Planned { .. } => {}
            EventKind::Warning { message } => {
                let _ = mp.println(format!("! {image:width$} {message}"));
            }
            _ => {
                if let (Some(bar), Some(t)) = (bars.get(&image), describe(&e)) {
                    let step = steps.get(&image).cloned().unwrap_or_default();
                    let line = if matches!(e.kind, EventKind::Output { .. }) || step.is_empty() {
                        t
                    } else {
                        format!("{step} · {t}")
                    };
                    bar.set_message(line);
                }
            }
        }
    }
    for (_, bar) in bars {
        bar.finish_and_clear();
    }
}

/// Image names are padded to this width so the live lines line up.
const PREFIX_WIDTH: usize = 18;

/// Pick the mode: `--json` > a terminal (and no NO_COLOR) > plain.
pub fn choose(json: bool, timestamps: bool, live_ok: bool) -> Mode {
    if json {
        Mode::Json
    } else if live_ok && !timestamps {
        Mode::Live
    } else {
        Mode::Plain { timestamps }
    }
}

#[cfg(test)]
mod transfer_tests {
    use super::*;

    fn at(secs: i64, done: u64, total: Option<u64>) -> Event {
        Event {
            at: chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default(),
            image: Some("base".into()),
            step: None,
            kind: EventKind::Transfer { path: "https://store/base.box".into(), done, total },
        }
    }

    #[test]
    fn a_log_says_how_a_long_transfer_goes_every_ten_seconds() {
        let mut log = TransferLog::default();
        let said: Vec<(i64, String)> = [(0, 0), (3, 10), (9, 30), (10, 40), (15, 60), (21, 80), (30, 100)]
            .into_iter()
            .filter_map(|(t, pct)| log.line(&at(t, pct * 1_000_000, Some(100_000_000))).map(|l| (t, l)))
            .collect();
        assert_eq!(
            said,
            vec![
                (10, "transferring https://store/base.box: 40% (40.0 of 100.0 MB, 4.0 MB/s)".to_string()),
                (21, "transferring https://store/base.box: 80% (80.0 of 100.0 MB, 3.8 MB/s)".to_string()),
            ],
        );
        // The end is `describe`'s line; a new transfer of the same path starts afresh.
        assert_eq!(
            describe(&at(30, 100_000_000, Some(100_000_000))).as_deref(),
            Some("transferred https://store/base.box (100.0 MB)")
        );
        assert_eq!(log.line(&at(40, 1, None)), None);
        assert_eq!(
            log.line(&at(50, 5_000_000, None)).as_deref(),
            Some("transferring https://store/base.box: 5.0 MB (0.5 MB/s)")
        );
    }
}
