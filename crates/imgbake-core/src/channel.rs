//! Release channels: named pointers at one artifact of an image (`candidate`, `stable`...), with
//! their history. The tree declares the channels and their policies (`[channels.NAME]`, see
//! [`imgbake_config::channels`]); a builder keeps the pointers where its platform's consumers look
//! (AWS: an SSM parameter per channel and region) through [`Builder::channel`] and
//! [`Builder::point`]; [`crate::promote`] moves them.
//!
//! Every move is recorded with the pointer, in one text format every builder stores as is
//! ([`PointRecord::to_text`]): who moved it, how (a build, a promotion, a rollback), from which
//! channel. The history comes back newest first from [`Builder::channel`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use imgbake_config::{Image, Tree};
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, tags};
use crate::builder::Builder;
use crate::error::BuildError;
use crate::event::EventSink;
use crate::provision::ProvisionReport;

/// How a pointer was moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointAction {
    /// A build that published pointed `candidate` at its new artifact.
    Build,
    /// `imgbake promote`.
    Promote,
    /// `imgbake promote --rollback`.
    Rollback,
}

impl std::fmt::Display for PointAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PointAction::Build => "build",
            PointAction::Promote => "promote",
            PointAction::Rollback => "rollback",
        })
    }
}

/// What imgbake records with each move of a pointer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointRecord {
    /// How it moved.
    pub action: PointAction,
    /// Who moved it: `$USER@host` of the imgbake process (the platform may record its own identity
    /// too, see [`Pointing::platform_user`]).
    pub by: String,
    /// The channel the artifact was promoted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The build that made the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// A rollback: the artifact it moved the channel away from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<String>,
}

/// The prefix of a recorded move, so records of other tools are told apart.
const RECORD_PREFIX: &str = "imgbake channel ";

impl PointRecord {
    /// A record of `action` by the current user.
    pub fn new(action: PointAction) -> Self {
        PointRecord { action, by: who(), from: None, build: None, reverts: None }
    }

    /// The text a builder stores with the pointer (under 300 characters: fits an SSM description).
    pub fn to_text(&self) -> String {
        format!("{RECORD_PREFIX}{}", serde_json::to_string(self).unwrap_or_default())
    }

    /// A record read back; `None` for text imgbake did not write.
    pub fn parse(text: &str) -> Option<PointRecord> {
        serde_json::from_str(text.strip_prefix(RECORD_PREFIX)?).ok()
    }
}

/// `$USER@host` of this process (`IMGBAKE_PROMOTER` overrides it, e.g. with a CI job's URL).
pub fn who() -> String {
    if let Ok(w) = std::env::var("IMGBAKE_PROMOTER")
        && !w.trim().is_empty()
    {
        // SSM descriptions hold 1024 characters: a long CI URL must not fail a promotion.
        return w.trim().chars().take(200).collect();
    }
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// One value a pointer held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pointing {
    /// The artifact's primary id (the AMI id in the build region).
    pub artifact: String,
    /// When the pointer was set to it.
    pub at: DateTime<Utc>,
    /// imgbake's record of the move; `None` when something else wrote the pointer.
    pub record: Option<PointRecord>,
    /// The identity the platform recorded for the write (an IAM ARN), if it keeps one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_user: Option<String>,
    /// The platform's version of the pointer (an SSM parameter version), if it keeps one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A channel of one image, as one builder keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelState {
    /// The channel.
    pub channel: String,
    /// Where the pointer lives, for people (`SSM parameter /images/web/stable`).
    pub location: String,
    /// What it points at now in each location (region → AMI id); empty when it was never set.
    pub current: BTreeMap<String, String>,
    /// Every value it held, newest first (the first is the current one).
    pub history: Vec<Pointing>,
}

impl ChannelState {
    /// The artifact it points at now (its primary id).
    pub fn artifact(&self) -> Option<&str> {
        self.history.first().map(|p| p.artifact.as_str())
    }

    /// How long `artifact` has been held in its latest stretch: from the move that set it to the
    /// next move to something else, or to `now` while it still holds it. `None`: never held.
    pub fn held(&self, artifact: &str, now: DateTime<Utc>) -> Option<std::time::Duration> {
        // Newest first: the first run of versions holding `artifact` is its latest stretch.
        let first = self.history.iter().position(|p| p.artifact == artifact)?;
        let end = if first == 0 { now } else { self.history[first - 1].at };
        let start = self.history[first..].iter().take_while(|p| p.artifact == artifact).last()?.at;
        Some((end - start).to_std().unwrap_or_default())
    }

    /// What `promote --rollback` returns to: the newest earlier value that is neither the current
    /// one nor one a later rollback moved away from (so rolling back twice goes back two steps).
    pub fn rollback_target(&self) -> Option<&Pointing> {
        let current = self.artifact()?;
        let mut skip: Vec<&str> = vec![current];
        for p in &self.history {
            if let Some(r) = p.record.as_ref().and_then(|r| r.reverts.as_deref()) {
                skip.push(r);
            }
            if !skip.contains(&p.artifact.as_str()) {
                return Some(p);
            }
        }
        None
    }
}

/// The result of an artifact's on-box tests, as its [`tags::TESTS`] label says: `passed: 3 passed
/// 0 failed 1 skipped`. An artifact without it ran no tests (or was built before imgbake recorded them).
pub fn tests_label(report: &ProvisionReport) -> Option<String> {
    if report.tests.is_empty() {
        return None;
    }
    let (p, f, s) = report.test_totals();
    // Tests that were all skipped proved nothing. (A suite without a report, judged by its exit code
    // alone, counts no case at all: it passes on exit 0.)
    let all_skipped = p == 0 && s > 0;
    let word = if !all_skipped && report.tests.iter().all(|t| t.passed()) { "passed" } else { "failed" };
    Some(format!("{word}: {p} passed {f} failed {s} skipped"))
}

/// Did the artifact's tests pass (its [`tags::TESTS`] label, read into `extra["tests"]`)?
pub fn tests_passed(artifact: &Artifact) -> bool {
    artifact.extra.get(EXTRA_TESTS).is_some_and(|t| t.starts_with("passed"))
}

/// The key of [`Artifact::extra`] under which builders put the artifact's [`tags::TESTS`] label.
pub const EXTRA_TESTS: &str = "tests";

/// After a build that publishes, in a tree with channels: label the artifact with its tests'
/// result and point `candidate` at it. Returns what was written, for people.
pub async fn after_build(
    tree: &Tree,
    builder: &dyn Builder,
    image: &Image,
    artifact: &Artifact,
    report: Option<&ProvisionReport>,
    events: &EventSink,
) -> Result<Vec<String>, BuildError> {
    if tree.channels().is_empty() {
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    if let Some(label) = report.and_then(tests_label) {
        builder.label(tree, artifact, tags::TESTS, &label).await?;
        written.push(format!("{} {label}", tags::TESTS));
    }
    let mut record = PointRecord::new(PointAction::Build);
    record.build = Some(artifact.build_id.clone());
    written.extend(builder.point(tree, image, imgbake_config::channels::CANDIDATE, artifact, &record, events).await?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::minutes(min)
    }

    fn p(artifact: &str, min: i64, reverts: Option<&str>) -> Pointing {
        let mut r = PointRecord::new(if reverts.is_some() { PointAction::Rollback } else { PointAction::Promote });
        r.reverts = reverts.map(str::to_string);
        Pointing { artifact: artifact.into(), at: at(min), record: Some(r), platform_user: None, version: None }
    }

    fn state(history: Vec<Pointing>) -> ChannelState {
        ChannelState { channel: "stable".into(), location: String::new(), current: BTreeMap::new(), history }
    }

    #[test]
    fn tests_that_all_skipped_do_not_pass() {
        let suite = |passed, failed, skipped| crate::provision::TestSuiteReport {
            step: "tests".into(),
            passed,
            failed,
            skipped,
            cases: Vec::new(),
            report_file: None,
            exit_code: Some(if failed > 0 { 1 } else { 0 }),
        };
        let report = |suites| ProvisionReport { steps: Vec::new(), tests: suites };
        assert_eq!(tests_label(&report(vec![suite(0, 0, 5)])).as_deref(), Some("failed: 0 passed 0 failed 5 skipped"));
        assert_eq!(tests_label(&report(vec![suite(3, 0, 1)])).as_deref(), Some("passed: 3 passed 0 failed 1 skipped"));
        assert_eq!(tests_label(&report(vec![suite(3, 1, 0)])).as_deref(), Some("failed: 3 passed 1 failed 0 skipped"));
        assert_eq!(tests_label(&report(vec![suite(0, 0, 0)])).as_deref(), Some("passed: 0 passed 0 failed 0 skipped"));
        assert_eq!(tests_label(&report(Vec::new())), None);
    }

    #[test]
    fn a_record_reads_back_and_foreign_text_is_not_one() {
        let mut r = PointRecord::new(PointAction::Promote);
        r.from = Some("candidate".into());
        assert_eq!(PointRecord::parse(&r.to_text()), Some(r.clone()));
        assert!(r.to_text().len() < 300);
        assert_eq!(PointRecord::parse("set by hand"), None);
    }

    #[test]
    fn held_measures_the_latest_stretch_only() {
        // a at 0, b at 10, a again at 20 (twice), c at 50.
        let s = state(vec![p("c", 50, None), p("a", 30, None), p("a", 20, None), p("b", 10, None), p("a", 0, None)]);
        assert_eq!(s.held("a", at(60)), Some(std::time::Duration::from_secs(30 * 60)));
        assert_eq!(s.held("c", at(60)), Some(std::time::Duration::from_secs(10 * 60)));
        assert_eq!(s.held("z", at(60)), None);
    }

    #[test]
    fn rolling_back_twice_goes_back_two_steps() {
        let s = state(vec![p("c", 20, None), p("b", 10, None), p("a", 0, None)]);
        assert_eq!(s.rollback_target().map(|p| p.artifact.as_str()), Some("b"));
        let s = state(vec![p("b", 30, Some("c")), p("c", 20, None), p("b", 10, None), p("a", 0, None)]);
        assert_eq!(s.rollback_target().map(|p| p.artifact.as_str()), Some("a"));
        let s = state(vec![
            p("a", 40, Some("b")),
            p("b", 30, Some("c")),
            p("c", 20, None),
            p("b", 10, None),
            p("a", 0, None),
        ]);
        assert_eq!(s.rollback_target(), None);
    }
}
