//! `imgbake clean`: finish what interrupted builds left behind — first from the cleanup journals
//! (exact, even after `kill -9`), then by sweeping the platforms for resources tagged by imgbake.

use std::time::Duration;

use imgbake_config::Tree;
use serde::Serialize;

use crate::builder::SweepFilter;
use crate::cleanup::{Journal, Resource};
use crate::error::{BuildError, ErrorKind};
use crate::event::EventSink;
use crate::registry::Registry;

/// The default minimum age of what the tag sweep removes.
pub const DEFAULT_OLDER_THAN: Duration = Duration::from_secs(6 * 3600);

/// What to clean.
#[derive(Clone, Debug, Default)]
pub struct CleanOptions {
    /// Only what this build created.
    pub build_id: Option<String>,
    /// Only what is older than this. Without `build_id` it defaults to six hours. Builds whose
    /// journal belongs to a running imgbake on this machine are never touched; the age protects
    /// builds running elsewhere (another CI runner), so keep it above your longest build.
    pub older_than: Option<Duration>,
    /// Only say what would be removed.
    pub dry_run: bool,
}

/// What cleaning did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CleanReport {
    /// Removed (or to be removed, in a dry run).
    pub removed: Vec<Resource>,
    /// Could not be removed, with the error.
    pub failed: Vec<(Resource, String)>,
    /// Tagged resources left alone because they are younger than the age filter.
    pub skipped_young: usize,
    /// The age filter in effect (the default without `--build-id`).
    pub older_than: Option<Duration>,
}

/// Clean the tree's leftovers.
pub async fn clean(
    tree: &Tree,
    registry: &Registry,
    opts: &CleanOptions,
    events: &EventSink,
) -> Result<CleanReport, BuildError> {
    let mut report = CleanReport::default();
    let journals = Journal::open_all(&tree.state_dir())
        .map_err(|e| BuildError::new(ErrorKind::Local, "cannot read the cleanup journals").caused_by(e))?;
    let older_than = opts.older_than.or(if opts.build_id.is_none() { Some(DEFAULT_OLDER_THAN) } else { None });
    let mut seen: Vec<Resource> = Vec::new();
    let mut running: Vec<String> = Vec::new();
    for j in journals {
        if j.process_alive() {
            // A build in progress: neither its journal nor (below) its tagged resources are touched.
            events.info(format!("build {} is running (journal {}); skipped", j.build_id(), j.path().display()));
            running.push(j.build_id().to_string());
            continue;
        }
        if opts.build_id.as_deref().is_some_and(|b| b != j.build_id()) {
            continue;
        }
        for r in j.pending().into_iter().rev() {
            seen.push(r.clone());
            if opts.dry_run {
                report.removed.push(r);
                continue;
            }
            remove(tree, registry, Some(&j), &r, events, &mut report).await;
        }
        if !opts.dry_run {
            let _ = j.finish();
        }
    }
    report.older_than = older_than;
    let filter = SweepFilter { build_id: opts.build_id.clone(), older_than, running };
    let mut kinds: Vec<String> =
        tree.images().values().flat_map(|i| i.builders.iter().map(|b| b.get_ref().clone())).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let Some(builder) = registry.get(&kind) else { continue };
        let found = builder.sweep(tree, &filter).await?;
        if older_than.is_some() {
            // Say what the age filter spared, so "removed 0" is not a mystery: what a sweep without
            // it would find, less what it found.
            let all = SweepFilter { older_than: None, ..filter.clone() };
            if let Ok(everything) = builder.sweep(tree, &all).await {
                report.skipped_young += everything.iter().filter(|r| !found.contains(r) && !seen.contains(r)).count();
            }
        }
        for r in found {
            if seen.contains(&r) {
                continue;
            }
            seen.push(r.clone());
            if opts.dry_run {
                report.removed.push(r);
            } else {
                remove(tree, registry, None, &r, events, &mut report).await;
            }
        }
    }
    Ok(report)
}

/// Remove `r` through its builder (and off `journal`, when it came from one), into the report.
async fn remove(
    tree: &Tree,
    registry: &Registry,
    journal: Option<&Journal>,
    r: &Resource,
    events: &EventSink,
    report: &mut CleanReport,
) {
    let Some(builder) = registry.get(&r.builder) else {
        report.failed.push((r.clone(), format!("builder `{}` is not available", r.builder)));
        return;
    };
    match crate::builder::remove(builder.as_ref(), tree, journal, r, events).await {
        Ok(()) => report.removed.push(r.clone()),
        Err(e) => report.failed.push((r.clone(), e.chain())),
    }
}
