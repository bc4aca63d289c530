//! Running a plan: builds in dependency order, independent branches in parallel, a failure stopping
//! only its own descendants, cleanup on every exit path (success, failure, Ctrl-C), the manifest
//! written as results come in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use imgbake_config::{Span, Stamp, Tree};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::artifact::Artifact;
use crate::builder::{BuildJob, BuildSource, unwind};
use crate::cleanup::{Journal, Resource};
use crate::error::{BuildError, ErrorKind};
use crate::event::{EventKind, EventSink};
use crate::lease::{self, Held, LeaseRecord};
use crate::manifest::{self, Manifest};
use crate::plan::{Action, Decision, Fingerprinter, Plan};
use crate::provision::{Interaction, NonInteractive, ProvisionReport, StepContext, StepRunner};
use crate::registry::Registry;

/// What to do with a failed build's machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Remove everything it created (default).
    #[default]
    Cleanup,
    /// Leave the machine and its resources for inspection (`imgbake clean` removes them later).
    Abort,
    /// Ask at the failing step: clean up, abort, or retry the step.
    Ask,
}

/// How to run a plan.
#[derive(Clone)]
pub struct RunOptions {
    /// How many builds run at once; `None`: the tree's `settings.parallel`, else 4.
    pub parallel: Option<usize>,
    /// What happens when a build fails.
    pub on_error: OnError,
    /// Debug mode: breakpoints pause, temporary keys are kept in 0600 files.
    pub debug: bool,
    /// Answers breakpoints and `--on-error=ask` questions.
    pub interaction: Arc<dyn Interaction>,
    /// Cancel (Ctrl-C, SIGTERM): running builds stop and clean up, pending ones do not start.
    pub cancel: CancellationToken,
    /// Use this build id (default: a new one).
    pub build_id: Option<String>,
    /// Publish built images (SSM parameters...). Default true.
    pub publish: bool,
    /// Where to write the manifest (default: the tree's `settings.manifest`); `None` with
    /// `write_manifest = false` writes none.
    pub manifest: Option<PathBuf>,
    /// Write the manifest. Default true.
    pub write_manifest: bool,
    /// Hold a lease per image while building it, with this time to live (renewed every third of
    /// it), so runs on other machines do not build the same image at once: they wait, then reuse
    /// what this run built. Only for builders with a shared place for leases ([`crate::lease`]).
    pub lease: Option<Duration>,
    /// The plan was forced (`--force`): with a lease, never reuse what another run built meanwhile.
    pub force: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallel: None,
            on_error: OnError::Cleanup,
            debug: false,
            interaction: Arc::new(NonInteractive),
            cancel: CancellationToken::new(),
            build_id: None,
            publish: true,
            manifest: None,
            write_manifest: true,
            lease: None,
            force: false,
        }
    }
}

/// How one image ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Built now.
    Built,
    /// An up-to-date artifact was reused.
    Reused,
    /// Its build failed.
    Failed,
    /// Not built: not selected, or its parent failed.
    Skipped,
    /// Interrupted.
    Cancelled,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Built => "built",
            Status::Reused => "reused",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
        }
    }
}

/// One image's result.
#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    /// The image.
    pub image: String,
    /// The builder.
    pub builder: String,
    /// How it ended.
    pub status: Status,
    /// Its artifact (built or reused).
    pub artifact: Option<Artifact>,
    /// Why it was built/reused/skipped.
    pub reasons: Vec<String>,
    /// The error of a failed build (with causes).
    pub error: Option<String>,
    /// The configuration value the error is about, as `file:line:col`.
    pub error_location: Option<String>,
    /// The error's span, for rendering with source snippets.
    #[serde(skip)]
    pub error_span: Option<Span>,
    /// When the build started.
    pub started: Option<chrono::DateTime<Utc>>,
    /// How long the build took (milliseconds in JSON, like every duration imgbake writes).
    #[serde(with = "crate::event::millis::option")]
    pub duration: Option<Duration>,
    /// What was published.
    pub published: Vec<String>,
    /// Steps and tests.
    pub report: Option<ProvisionReport>,
}

/// A run's results.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// The run's build id.
    pub build_id: String,
    /// Per image and builder, in tree order.
    pub results: Vec<ImageResult>,
    /// Where the manifest was written.
    pub manifest: Option<PathBuf>,
    /// Resources left behind on purpose (`--on-error=abort`) or because removing them failed.
    pub leftovers: Vec<Resource>,
}

impl RunSummary {
    /// No build failed or was cancelled.
    pub fn ok(&self) -> bool {
        !self.results.iter().any(|r| matches!(r.status, Status::Failed | Status::Cancelled))
            && self.leftovers.is_empty()
    }

    /// How many results have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
}

/// A new build id: `b` + UTC time + 4 random hex digits, e.g. `b20261124-101500-3fa2`.
pub fn new_build_id() -> String {
    let r = uuid::Uuid::new_v4();
    format!("b{}-{}", Utc::now().format("%Y%m%d-%H%M%S"), &r.simple().to_string()[..4])
}

#[derive(Clone, Debug)]
enum Slot {
    Pending,
    Ready(Box<Artifact>),
    Failed,
}

struct Ctx {
    tree: Arc<Tree>,
    /// Fingerprints of children whose parent this run rebuilds (their origin is only known then).
    fingerprints: Fingerprinter,
    started: chrono::DateTime<Utc>,
    registry: Registry,
    opts: RunOptions,
    events: EventSink,
    build_id: String,
    sem: Semaphore,
    results: Mutex<Vec<ImageResult>>,
    leftovers: Mutex<Vec<Resource>>,
    manifest: Mutex<Manifest>,
    manifest_path: Option<PathBuf>,
}

impl Ctx {
    fn finish(&self, d: &Decision, r: ImageResult) {
        let entry = manifest::Entry {
            status: r.status.as_str().into(),
            artifact: r.artifact.clone(),
            fingerprint: r.artifact.as_ref().map(|a| a.fingerprint.clone()).or_else(|| d.fingerprint.clone()),
            parent: d.parent.clone(),
            source: r.artifact.as_ref().map(|a| a.source.clone()),
            reasons: r.reasons.clone(),
            build_id: r.artifact.as_ref().map(|a| a.build_id.clone()),
            started: r.started,
            duration_s: r.duration.map(|d| d.as_secs_f64()),
            steps: r.report.as_ref().map(|p| to_values(&p.steps)).unwrap_or_default(),
            tests: r.report.as_ref().map(|p| to_values(&p.tests)).unwrap_or_default(),
            published: r.published.clone(),
            error: r.error.clone(),
            error_location: r.error_location.clone(),
        };
        if let Ok(mut m) = self.manifest.lock() {
            m.images.entry(d.image.clone()).or_default().insert(d.builder.clone(), entry);
            m.finished = Some(Utc::now());
            if let Some(p) = &self.manifest_path
                && let Err(e) = m.write(p)
            {
                self.events.warn(format!("cannot write the manifest {}: {e}", p.display()));
            }
        }
        if let Ok(mut v) = self.results.lock() {
            v.push(r);
        }
    }
}

fn to_values<T: Serialize>(items: &[T]) -> Vec<serde_json::Value> {
    items.iter().filter_map(|i| serde_json::to_value(i).ok()).collect()
}

fn result(d: &Decision, status: Status, reasons: Vec<String>) -> ImageResult {
    ImageResult {
        image: d.image.clone(),
        builder: d.builder.clone(),
        status,
        artifact: None,
        reasons,
        error: None,
        error_location: None,
        error_span: None,
        started: None,
        duration: None,
        published: Vec::new(),
        report: None,
    }
}

/// Run `plan` on `tree` (as loaded; it is re-rendered with this run's build id and time).
pub async fn run(
    tree: &Tree,
    plan: &Plan,
    registry: &Registry,
    opts: RunOptions,
    events: &EventSink,
) -> Result<RunSummary, BuildError> {
    let build_id = opts.build_id.clone().unwrap_or_else(new_build_id);
    let started = Utc::now();
    let stamped = tree
        .rerender(&Stamp::new(build_id.clone(), started))
        .map_err(|e| BuildError::new(ErrorKind::Config, e.to_string()))?;
    let events = events.with_secrets(tree.secrets());
    if opts.publish {
        check_publishing(&stamped, plan, registry).await?;
    }
    let manifest_path =
        if opts.write_manifest { Some(opts.manifest.clone().unwrap_or_else(|| tree.manifest_path())) } else { None };
    let mut manifest = manifest_path.as_deref().and_then(Manifest::read).unwrap_or_default();
    manifest.format = manifest::FORMAT;
    manifest.tree = tree.name();
    manifest.build_id = build_id.clone();
    manifest.started = Some(started);
    let ctx = Arc::new(Ctx {
        fingerprints: Fingerprinter::new(tree)?,
        tree: Arc::new(stamped),
        started,
        registry: registry.clone(),
        sem: Semaphore::new(opts.parallel.or(tree.settings().parallel.map(|p| p as usize)).unwrap_or(4).max(1)),
        opts,
        events: events.clone(),
        build_id: build_id.clone(),
        results: Mutex::new(Vec::new()),
        leftovers: Mutex::new(Vec::new()),
        manifest: Mutex::new(manifest),
        manifest_path: manifest_path.clone(),
    });

    let mut slots: HashMap<(String, String), watch::Receiver<Slot>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut task_of = HashMap::new();
    for d in &plan.decisions {
        let key = (d.image.clone(), d.builder.clone());
        match d.action {
            Action::Reuse => {
                let (tx, rx) = watch::channel(match &d.artifact {
                    Some(a) => Slot::Ready(Box::new(a.clone())),
                    None => Slot::Failed,
                });
                drop(tx);
                slots.insert(key, rx);
                let mut r = result(d, Status::Reused, d.reasons.clone());
                r.artifact = d.artifact.clone();
                if ctx.opts.publish && ctx.tree.image(&d.image).is_some_and(|i| i.publish.is_some()) {
                    // Children start from the artifact at once; its announcement is checked beside them.
                    let (ctx, d) = (ctx.clone(), d.clone());
                    let decision = d.clone();
                    let task = tasks.spawn(async move { republish(ctx, d, r).await });
                    task_of.insert(task.id(), decision);
                } else {
                    ctx.finish(d, r);
                }
            }
            Action::Skip => {
                let (_tx, rx) = watch::channel(Slot::Failed);
                slots.insert(key, rx);
                ctx.finish(d, result(d, Status::Skipped, d.reasons.clone()));
            }
            Action::Build => {
                let (tx, rx) = watch::channel(Slot::Pending);
                slots.insert(key, rx);
                let parent_builder =
                    ctx.tree.image(&d.image).map_or(d.builder.as_str(), |i| i.parent_builder(&d.builder)).to_string();
                let parent_rx = d.parent.as_ref().and_then(|p| slots.get(&(p.clone(), parent_builder))).cloned();
                let ctx = ctx.clone();
                let d = d.clone();
                let decision = d.clone();
                let task = tasks.spawn(async move { build_one(ctx, d, parent_rx, tx).await });
                task_of.insert(task.id(), decision);
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        // A panic outside the builder's own calls (those are caught in `build_inner`, where the
        // journal is unwound) is still a failed build, never a silent success; its slot reads as
        // failed for the children.
        if let Err(e) = joined
            && let Some(d) = task_of.get(&e.id())
        {
            let err = match e.try_into_panic() {
                Ok(p) => panicked("the build task", &*p).message,
                Err(e) => format!("the build task stopped unexpectedly: {e}"),
            };
            events.for_image(&d.image).emit(EventKind::BuildFinished {
                outcome: Status::Failed,
                duration: Duration::ZERO,
                error: Some(err.clone()),
            });
            let mut r = result(d, Status::Failed, d.reasons.clone());
            r.error = Some(err);
            ctx.finish(d, r);
        }
    }

    let mut results = ctx.results.lock().map(|r| r.clone()).unwrap_or_default();
    let order: HashMap<(&str, &str), usize> =
        plan.decisions.iter().enumerate().map(|(i, d)| ((d.image.as_str(), d.builder.as_str()), i)).collect();
    results.sort_by_key(|r| order.get(&(r.image.as_str(), r.builder.as_str())).copied().unwrap_or(usize::MAX));
    let leftovers = ctx.leftovers.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(RunSummary { build_id, results, manifest: manifest_path, leftovers })
}

/// A reused artifact of an image that publishes: announce it again when its builder says the
/// announcement lacks it (an earlier publish failed half-way, or that run had `--no-publish`).
async fn republish(ctx: Arc<Ctx>, d: Decision, mut r: ImageResult) {
    let events = ctx.events.for_image(&d.image);
    let (Some(img), Some(builder), Some(artifact)) =
        (ctx.tree.image(&d.image), ctx.registry.get(&d.builder), d.artifact.as_ref())
    else {
        return ctx.finish(&d, r);
    };
    let outcome = std::panic::AssertUnwindSafe(async {
        match builder.is_published(&ctx.tree, img, artifact).await? {
            Some(false) => {
                events.info(format!(
                    "{} is not published yet (an earlier publish did not finish): publishing it",
                    artifact.id
                ));
                builder.publish(&ctx.tree, img, artifact, &events).await.map(Some)
            }
            _ => Ok(None),
        }
    })
    .catch_unwind()
    .await
    .unwrap_or_else(|p| Err(panicked("publishing", &*p)));
    match outcome {
        Ok(Some(published)) => {
            r.reasons.push("published now: the announcement did not name it".into());
            r.published = published;
        }
        Ok(None) => {}
        Err(e) => {
            r.status = Status::Failed;
            r.error = Some(format!("reused {} but publishing it failed: {}", artifact.id, e.chain()));
            r.error_span = e.span;
        }
    }
    ctx.finish(&d, r);
}

/// A panic's payload as an error (the message is a `&str` or a `String` for `panic!` and overflows).
/// Before any build: every image to build that publishes can (credentials, a reachable store), so
/// a long build does not end in "built but publishing failed".
async fn check_publishing(tree: &Tree, plan: &Plan, registry: &Registry) -> Result<(), BuildError> {
    for d in plan.decisions.iter().filter(|d| d.action == Action::Build) {
        if let (Some(img), Some(builder)) = (tree.image(&d.image), registry.get(&d.builder))
            && img.publish.is_some()
        {
            builder.check_publish(tree, img).await?;
        }
    }
    Ok(())
}

fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> BuildError {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    BuildError::new(ErrorKind::Internal, format!("{what} panicked (a bug in imgbake; please report it): {msg}"))
}

async fn wait_parent(rx: &mut watch::Receiver<Slot>, cancel: &CancellationToken) -> Option<Slot> {
    loop {
        let now = rx.borrow().clone();
        match now {
            Slot::Pending => {}
            done => return Some(done),
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Some(Slot::Failed) },
            _ = cancel.cancelled() => return None,
        }
    }
}

async fn build_one(ctx: Arc<Ctx>, d: Decision, parent_rx: Option<watch::Receiver<Slot>>, tx: watch::Sender<Slot>) {
    let cancel = ctx.opts.cancel.clone();
    let events = ctx.events.for_image(&d.image);
    let cancelled = |ctx: &Ctx, tx: &watch::Sender<Slot>| {
        let _ = tx.send(Slot::Failed);
        ctx.finish(&d, result(&d, Status::Cancelled, vec!["interrupted before it started".into()]));
    };
    // 1. The parent's artifact.
    let parent_artifact = match parent_rx {
        None => None,
        Some(mut rx) => match wait_parent(&mut rx, &cancel).await {
            None => return cancelled(&ctx, &tx),
            Some(Slot::Ready(a)) => Some(*a),
            // The parent failed because the run was cancelled: so is this build, not "skipped".
            Some(_) if cancel.is_cancelled() => return cancelled(&ctx, &tx),
            Some(_) => {
                let _ = tx.send(Slot::Failed);
                let p = d.parent.clone().unwrap_or_default();
                events.emit(EventKind::BuildFinished {
                    outcome: Status::Skipped,
                    duration: Duration::ZERO,
                    error: Some(format!("parent {p} failed")),
                });
                return ctx.finish(&d, result(&d, Status::Skipped, vec![format!("parent {p} failed")]));
            }
        },
    };
    // 2. The lease, when runs on other machines may build this image too (before a build slot:
    // waiting for another machine's build must not keep this run's other images from building).
    let held = match take_lease(&ctx, &d, parent_artifact.as_ref(), &events).await {
        Ok(Leased::Free(held)) => held,
        Ok(Leased::BuiltElsewhere(artifact, why)) => {
            events.info(why.clone());
            let _ = tx.send(Slot::Ready(artifact.clone()));
            let mut r = result(&d, Status::Reused, vec![why]);
            r.artifact = Some(*artifact);
            events.emit(EventKind::BuildFinished { outcome: Status::Reused, duration: Duration::ZERO, error: None });
            return ctx.finish(&d, r);
        }
        Err(e) if e.kind == ErrorKind::Cancelled => return cancelled(&ctx, &tx),
        Err(e) => {
            let _ = tx.send(Slot::Failed);
            let mut r = result(&d, Status::Failed, d.reasons.clone());
            r.error = Some(e.chain());
            events.emit(EventKind::BuildFinished {
                outcome: Status::Failed,
                duration: Duration::ZERO,
                error: r.error.clone(),
            });
            return ctx.finish(&d, r);
        }
    };
    // 3. A build slot.
    let permit = tokio::select! {
        p = ctx.sem.acquire() => p.ok(),
        _ = cancel.cancelled() => None,
    };
    let Some(_permit) = permit else {
        release(held, &events).await;
        return cancelled(&ctx, &tx);
    };
    let start = Instant::now();
    let started_at = Utc::now();
    // Built unless the build fails, or succeeds but cannot publish (build_inner then says Failed).
    let mut res = result(&d, Status::Built, d.reasons.clone());
    let outcome = build_inner(&ctx, &d, parent_artifact, &events, &mut res).await;
    release(held, &events).await;
    res.duration = Some(start.elapsed());
    res.started = Some(started_at);
    match outcome {
        Ok(artifact) => {
            let _ = tx.send(Slot::Ready(Box::new(artifact.clone())));
            res.artifact = Some(artifact);
        }
        Err(e) => {
            let _ = tx.send(Slot::Failed);
            res.status = if e.kind == ErrorKind::Cancelled { Status::Cancelled } else { Status::Failed };
            res.error = Some(e.chain());
            res.error_span = e.span;
            res.error_location = e.span.map(|s| ctx.tree.locate(s));
        }
    }
    events.emit(EventKind::BuildFinished {
        outcome: res.status,
        duration: res.duration.unwrap_or_default(),
        error: res.error.clone(),
    });
    ctx.finish(&d, res);
}

/// What the lease step found.
enum Leased {
    /// Build: under this lease, or without one (no lease asked for, or none for this builder).
    Free(Option<Held>),
    /// Another run built this image while this one waited for the lease: reuse its artifact.
    BuiltElsewhere(Box<Artifact>, String),
}

/// How long a run waits for another run's build of the same image.
const LEASE_WAIT: Duration = Duration::from_secs(12 * 3600);

/// Let go of a build lease (if any), saying so when it was lost on the way.
async fn release(held: Option<Held>, events: &EventSink) {
    let Some(h) = held else { return };
    if h.lost() {
        events.warn(
            "another run took this image's build lease over during the build (its renewals failed for a whole time to live): it may have built the image too",
        );
    }
    if let Err(e) = h.release().await {
        events.warn(format!("could not release the build lease (it lapses by itself): {e}"));
    }
}

async fn take_lease(
    ctx: &Ctx,
    d: &Decision,
    parent_artifact: Option<&Artifact>,
    events: &EventSink,
) -> Result<Leased, BuildError> {
    let (Some(ttl), Some(builder), Some(img)) =
        (ctx.opts.lease, ctx.registry.get(&d.builder), ctx.tree.image(&d.image))
    else {
        return Ok(Leased::Free(None));
    };
    let Some(store) = builder.lease_store(&ctx.tree, img).await? else { return Ok(Leased::Free(None)) };
    let last_busy: Mutex<Option<LeaseRecord>> = Mutex::new(None);
    let wait = crate::wait::Wait::new(LEASE_WAIT).interval(Duration::from_secs(2), Duration::from_secs(20));
    let holder = lease::holder_name();
    let acquiring = lease::acquire(store, &holder, &ctx.build_id, ttl, &wait, |r| {
        events.state("build lease", &format!("held by {} (build {}), waiting", r.holder, r.build_id));
        if let Ok(mut l) = last_busy.lock() {
            *l = Some(r.clone());
        }
    });
    let held = tokio::select! {
        h = acquiring => h?,
        _ = ctx.opts.cancel.cancelled() => return Err(BuildError::cancelled()),
    };
    if ctx.opts.force {
        return Ok(Leased::Free(Some(held)));
    }
    // Another run may have built exactly what we would since our plan (whether we waited for it
    // or it finished just before): look once more. A failure to look is not fatal: build.
    let by = match last_busy.lock().ok().and_then(|mut l| l.take()) {
        Some(r) => format!("{} (build {})", r.holder, r.build_id),
        None => "another run".to_string(),
    };
    let found = match fingerprint_of(ctx, d, parent_artifact) {
        Ok(fp) => match builder.list_artifacts(&ctx.tree, &[img]).await {
            Ok(list) => list.into_iter().find(|a| {
                a.builder == d.builder
                    && a.image == d.image
                    && crate::fingerprint::Fingerprint(fp.clone()).matches(&a.fingerprint)
            }),
            Err(e) => {
                events.warn(format!("could not look for an artifact built meanwhile ({e}); building"));
                None
            }
        },
        Err(e) => {
            release(Some(held), events).await;
            return Err(e);
        }
    };
    match found {
        Some(a) => {
            release(Some(held), events).await;
            let why = format!("built meanwhile by {by}: {}", a.id);
            Ok(Leased::BuiltElsewhere(Box::new(a), why))
        }
        None => Ok(Leased::Free(Some(held))),
    }
}

/// The fingerprint this build gives its artifact.
fn fingerprint_of(ctx: &Ctx, d: &Decision, parent_artifact: Option<&Artifact>) -> Result<String, BuildError> {
    match (&d.fingerprint, parent_artifact) {
        (Some(f), None) => Ok(f.clone()),
        // A child of a parent built in this run: its fingerprint depends on the new parent artifact.
        (_, Some(a)) => Ok(ctx.fingerprints.fingerprint(&d.image, &d.builder, &a.id)?.0),
        (None, None) => Err(BuildError::new(ErrorKind::Config, format!("image `{}` has no fingerprint", d.image))),
    }
}

async fn build_inner(
    ctx: &Ctx,
    d: &Decision,
    parent_artifact: Option<Artifact>,
    events: &EventSink,
    res: &mut ImageResult,
) -> Result<Artifact, BuildError> {
    let builder = ctx
        .registry
        .get(&d.builder)
        .cloned()
        .ok_or_else(|| BuildError::new(ErrorKind::Config, format!("builder `{}` is not available", d.builder)))?;
    let source = match (&parent_artifact, &d.source) {
        (Some(a), _) => BuildSource::Parent(a.clone()),
        (None, Some(s)) => BuildSource::Root(s.clone()),
        (None, None) => {
            return Err(BuildError::new(ErrorKind::Config, format!("image `{}` has no source to start from", d.image)));
        }
    };
    let fingerprint = fingerprint_of(ctx, d, parent_artifact.as_ref())?;
    let journal_name = if ctx.tree.image(&d.image).is_some_and(|i| i.builders.len() > 1) {
        format!("{}-{}", d.image, d.builder)
    } else {
        d.image.clone()
    };
    let journal = Arc::new(
        Journal::create(&ctx.tree.state_dir(), &ctx.build_id, &journal_name)
            .map_err(|e| BuildError::new(ErrorKind::Local, "cannot start the cleanup journal").caused_by(e))?,
    );

    // A child's tree is rendered with its parent's artifact (`{{ parent.artifact }}`).
    let tree = match (&parent_artifact, &d.parent) {
        (Some(a), Some(p)) => {
            let mut stamp = Stamp::new(ctx.build_id.clone(), ctx.started);
            stamp.parent_artifacts.insert(p.clone(), a.id.clone());
            Arc::new(ctx.tree.rerender(&stamp).map_err(|e| BuildError::new(ErrorKind::Config, e.to_string()))?)
        }
        _ => ctx.tree.clone(),
    };
    let mut sc = StepContext::new(tree.clone(), d.image.clone(), d.builder.clone(), ctx.events.clone());
    sc.interaction = match ctx.opts.on_error {
        OnError::Ask => ctx.opts.interaction.clone(),
        _ => {
            if ctx.opts.debug {
                ctx.opts.interaction.clone()
            } else {
                Arc::new(NonInteractive)
            }
        }
    };
    sc.debug = ctx.opts.debug;
    let keep_on_failure = matches!(ctx.opts.on_error, OnError::Abort | OnError::Ask);
    // Absolute, so the `ssh -i` lines it appears in work from any directory.
    let key_file = (ctx.opts.debug || keep_on_failure).then(|| {
        let p = ctx.tree.state_dir().join("keys").join(format!("{}-{}.key", ctx.build_id, journal_name));
        std::path::absolute(&p).unwrap_or(p)
    });
    sc.key_file = key_file.clone();
    sc.values.insert("IMGBAKE_BUILD_ID".into(), ctx.build_id.clone());
    sc.values.insert("IMGBAKE_FINGERPRINT".into(), fingerprint.clone());
    sc.values.insert("IMGBAKE_SOURCE".into(), source.id_in(""));
    if let Some(p) = &d.parent {
        sc.values.insert("IMGBAKE_PARENT".into(), p.clone());
    }
    if let Some(a) = &parent_artifact {
        sc.values.insert("IMGBAKE_PARENT_ARTIFACT".into(), a.id.clone());
    }
    let runner = Arc::new(StepRunner::new(sc));
    let job = BuildJob {
        tree: tree.clone(),
        image: d.image.clone(),
        build_id: ctx.build_id.clone(),
        fingerprint,
        source,
        events: events.clone(),
        journal: journal.clone(),
        provisioner: runner.clone(),
        debug: ctx.opts.debug,
        keep_on_failure,
        key_file: key_file.clone(),
    };
    events.emit(EventKind::BuildStarted { build_id: ctx.build_id.clone(), builder: d.builder.clone() });
    let cancel = ctx.opts.cancel.clone();
    // A panic in the builder (a bug) fails this build like any error: its journal is still unwound.
    let outcome = tokio::select! {
        r = std::panic::AssertUnwindSafe(crate::builder::run(builder.as_ref(), &job)).catch_unwind() => r.unwrap_or_else(|p| Err(panicked("the build", &*p))),
        _ = cancel.cancelled() => Err(BuildError::cancelled()),
    };
    res.report = Some(runner.report());

    // Cleanup on every path, except when the user asked to keep a failed machine for inspection.
    let keep = match &outcome {
        Err(e) if e.kind == ErrorKind::Aborted => true,
        Err(e) if e.kind != ErrorKind::Cancelled => ctx.opts.on_error == OnError::Abort,
        _ => false,
    };
    if keep {
        let pending = journal.pending();
        let key = key_file.as_ref().filter(|k| k.exists()).map(|k| format!("; log in with the key {}", k.display()));
        events.warn(format!(
            "kept for inspection: {}{}; remove them with `imgbake clean {} --build-id {}` (journal {})",
            pending.iter().map(Resource::describe).collect::<Vec<_>>().join(", "),
            key.unwrap_or_default(),
            ctx.tree.project().root().display(),
            ctx.build_id,
            journal.path().display()
        ));
        if let Ok(mut l) = ctx.leftovers.lock() {
            l.extend(pending);
        }
    } else {
        // Cleanup must finish even after Ctrl-C: it is not raced against the cancel token.
        let failed = unwind(&journal, builder.as_ref(), &ctx.tree, events).await;
        if let Some(k) = &key_file
            && let Err(e) = std::fs::remove_file(k)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            events.warn(format!("could not remove the login key {}: {e}", k.display()));
        }
        if let Ok(mut l) = ctx.leftovers.lock() {
            l.extend(failed.into_iter().map(|(r, _)| r));
        }
    }
    let artifact = outcome?;
    events.emit(EventKind::ArtifactCreated {
        id: artifact.id.clone(),
        location: artifact.locations.keys().cloned().collect::<Vec<_>>().join(","),
    });

    if ctx.opts.publish
        && let Some(img) = ctx.tree.image(&d.image)
        && img.publish.is_some()
    {
        let published = std::panic::AssertUnwindSafe(builder.publish(&ctx.tree, img, &artifact, events))
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(panicked("publishing", &*p)));
        match published {
            Ok(p) => res.published = p,
            Err(e) => {
                // The artifact is good (children may use it) but consumers were not told: a failure.
                res.status = Status::Failed;
                res.error = Some(format!("built {} but publishing failed: {}", artifact.id, e.chain()));
                res.error_span = e.span;
            }
        }
    }
    // Release channels: the new artifact becomes `candidate` (see crate::channel).
    if ctx.opts.publish
        && res.error.is_none()
        && let Some(img) = ctx.tree.image(&d.image)
    {
        match crate::channel::after_build(&ctx.tree, builder.as_ref(), img, &artifact, res.report.as_ref(), events)
            .await
        {
            Ok(p) => res.published.extend(p),
            Err(e) => {
                res.status = Status::Failed;
                res.error =
                    Some(format!("built {} but pointing channel `candidate` failed: {}", artifact.id, e.chain()));
                res.error_span = e.span;
            }
        }
    }
    Ok(artifact)
}
