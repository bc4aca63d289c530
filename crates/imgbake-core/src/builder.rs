//! The [`Builder`] trait: how a platform turns a source into an artifact.
//!
//! A builder owns everything platform-specific — finding the source image, launching a machine,
//! capturing the result, finding artifacts again by their tags, removing what a build left behind.
//! Everything else is shared: the steps run through [`Provision`] over a
//! [`Communicator`](crate::communicator::Communicator), resources are recorded in the build's
//! [`Journal`], and progress goes to the [`EventSink`].
//!
//! A build is a fixed sequence of phases that core drives ([`run`]); a builder supplies each phase
//! as a small method and never emits the phase events itself:
//!
//! | phase | who | what |
//! |---|---|---|
//! | `prepare` | [`Builder::prepare`] | check what can be checked before anything exists; start the per-build state ([`Build`]) from the job's [`BuildSource`] (the root's [`ResolvedSource`], as planning resolved it, or the parent's [`Artifact`]) |
//! | `launch` | [`Build::launch`] | temporary resources (keys, firewall rules) and the machine, each [recorded](BuildJob::record) the moment it exists; wait until it runs |
//! | `connect` | [`Build::connect`] | a [`Communicator`] logged in to the machine |
//! | `provision` | core | the image's steps ([`Provision::provision`]), with the builder's [platform reboot](Build::platform_reboot); [`Build::lost`] ends it early when the machine dies |
//! | `sanitize` | core | [`Provision::sanitize`] removes what the builder installed ([`Build::sanitize_items`]) |
//! | `shutdown` | [`Build::shutdown`] | stop the machine (still connected: e.g. flush its disks first) |
//! | `capture` | [`Build::capture`] | make the artifact (journaled until complete, then released so it is kept) |
//! | `distribute` | [`Build::distribute`] | copies, sharing, completion marks (optional) |
//!
//! On an error in any phase core disconnects, calls [`Build::failed`] (stop what must not outlive
//! the process, or keep a machine the user wants to inspect) and returns the error. The scheduler
//! then unwinds the journal on every path — success, failure, Ctrl-C, a panic — so temporary
//! resources never outlive the build; resources are removed by the one path [`remove`].

use std::sync::Arc;

use async_trait::async_trait;
use imgbake_config::{Image, Tree};
use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::cleanup::{Journal, Resource};
use crate::communicator::Communicator;
use crate::error::BuildError;
use crate::event::{EventKind, EventSink, Phase};
use crate::reboot::PlatformReboot;
use crate::sanitize::SanitizeItems;

/// Where a chain starts, resolved to an exact, immutable thing. Planning resolves it once
/// ([`Builder::resolve_source`]) and the build gets it as data on the job ([`BuildSource::Root`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedSource {
    /// Stable id: an AMI id, a disk file's path and content hash...
    pub id: String,
    /// For people, e.g. `ami-0abc (debian-12-amd64-20261101-1234, newest of 3 matches)`.
    pub description: String,
    /// What the builder learnt resolving it and needs again to build (e.g. the source AMI's disks),
    /// so the build need not look it up again. Builder-defined keys; not part of the fingerprint.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub details: std::collections::BTreeMap<String, String>,
}

impl ResolvedSource {
    /// A resolved source without details.
    pub fn new(id: impl Into<String>, description: impl Into<String>) -> Self {
        ResolvedSource { id: id.into(), description: description.into(), details: Default::default() }
    }
}

/// What one build starts from.
#[derive(Clone, Debug)]
pub enum BuildSource {
    /// The start of a chain.
    Root(ResolvedSource),
    /// The parent image's artifact.
    Parent(Artifact),
}

impl BuildSource {
    /// The source id (an AMI id, a file...), in `location` when the parent exists in several.
    pub fn id_in(&self, location: &str) -> String {
        match self {
            BuildSource::Root(r) => r.id.clone(),
            BuildSource::Parent(a) => a.id_in(location).to_string(),
        }
    }
}

/// Runs an image's steps on a machine (the core step runner implements it; builders only call it).
#[async_trait]
pub trait Provision: Send + Sync {
    /// Run every step for this builder, in order. `platform` offers the platform's own reboot
    /// (EC2 RebootInstances, QEMU system_reset) to reboot steps that ask for it.
    async fn provision(
        &self,
        comm: &dyn Communicator,
        platform: Option<Arc<dyn PlatformReboot>>,
    ) -> Result<(), BuildError>;

    /// The `sanitize` phase (see [`crate::sanitize`]): after the steps, before capture, clean the
    /// machine of what the builder installed for the build (`items`) unless the image says
    /// `sanitize = false`. Core calls it (see [`run`]).
    async fn sanitize(
        &self,
        _comm: &dyn Communicator,
        _items: &crate::sanitize::SanitizeItems,
    ) -> Result<(), BuildError> {
        Ok(())
    }
}

/// Everything a builder needs for one build.
#[derive(Clone)]
pub struct BuildJob {
    /// The tree, rendered with this build's values (build id, timestamp).
    pub tree: Arc<Tree>,
    /// The image being built.
    pub image: String,
    /// This build's id; every resource is tagged with it.
    pub build_id: String,
    /// The fingerprint the artifact will carry.
    pub fingerprint: String,
    /// What the build starts from.
    pub source: BuildSource,
    /// Progress, stamped with the image.
    pub events: EventSink,
    /// The undo stack: push every resource the moment it exists.
    pub journal: Arc<Journal>,
    /// Runs the steps.
    pub provisioner: Arc<dyn Provision>,
    /// Debug mode: breakpoints pause; the machine's temporary key goes to [`BuildJob::key_file`].
    pub debug: bool,
    /// A failed build may keep its machine for inspection (`--on-error=abort` or `ask`): launch it so
    /// it can outlive imgbake, and leave it running when provisioning ends with
    /// [`ErrorKind::Aborted`](crate::error::ErrorKind::Aborted).
    pub keep_on_failure: bool,
    /// Where to write the machine's temporary private login key (OpenSSH format, mode 0600), when set
    /// (debug mode, or a machine that may be kept), so the printed `ssh -i` commands work. The
    /// scheduler removes it after the build unless the machine was kept.
    pub key_file: Option<std::path::PathBuf>,
}

impl BuildJob {
    /// The image's settings (an error when the job names an image its tree does not have).
    pub fn image(&self) -> Result<&Image, BuildError> {
        self.tree.image(&self.image).ok_or_else(|| {
            BuildError::new(
                crate::error::ErrorKind::Config,
                format!("the build job names image `{}`, which its tree does not have", self.image),
            )
        })
    }

    /// Write the machine's temporary private key (OpenSSH text) to [`BuildJob::key_file`], if the
    /// job has one; returns the path written.
    pub fn write_key_file(&self, openssh_private_key: &str) -> Result<Option<std::path::PathBuf>, BuildError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = &self.key_file else { return Ok(None) };
        let local = |e: std::io::Error| {
            BuildError::new(
                crate::error::ErrorKind::Local,
                format!("cannot write the login key {}: {e}", path.display()),
            )
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(local)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(local)?;
        f.write_all(openssh_private_key.as_bytes()).map_err(local)?;
        Ok(Some(path.clone()))
    }

    /// Record a resource on the journal and say so.
    pub fn record(&self, resource: Resource) -> Result<(), BuildError> {
        self.journal.push(resource.clone()).map_err(|e| {
            BuildError::new(crate::error::ErrorKind::Local, format!("cannot journal {}", resource.describe()))
                .caused_by(e)
        })?;
        self.events.emit(crate::event::EventKind::ResourceCreated {
            kind: format!("{}.{}", resource.builder, resource.kind),
            id: resource.id.clone(),
            region: resource.region.clone(),
        });
        Ok(())
    }

    /// A resource was removed normally, or is kept for good (it is the artifact): take it off the journal.
    pub fn release(&self, resource: &Resource) -> Result<(), BuildError> {
        self.journal.done(resource).map_err(|e| {
            BuildError::new(crate::error::ErrorKind::Local, format!("cannot journal {}", resource.describe()))
                .caused_by(e)
        })
    }
}

/// What `imgbake clean` looks for.
#[derive(Clone, Debug, Default)]
pub struct SweepFilter {
    /// Only resources of this build.
    pub build_id: Option<String>,
    /// Only resources created longer ago than this.
    pub older_than: Option<std::time::Duration>,
    /// Builds in progress (their journal's process is alive): never swept, however old.
    pub running: Vec<String>,
}

impl SweepFilter {
    /// Is `build_id` excluded: another build asked for, or one still running?
    pub fn skips_build(&self, build_id: &str) -> bool {
        self.build_id.as_deref().is_some_and(|b| b != build_id) || self.running.iter().any(|r| r == build_id)
    }
}

/// One build in progress: the builder's per-build state, driven phase by phase by [`run`] (see the
/// [module docs](self) for the order). It borrows the builder and the job; everything it creates
/// goes on the job's journal through [`BuildJob::record`].
#[async_trait]
pub trait Build: Send {
    /// Does this build run a machine? `false`: the builder makes its artifact straight from its
    /// source (e.g. an AMI written from the parent's disk file): core skips `launch`, `connect`,
    /// provisioning and `shutdown`, and goes to `capture`. Validation refuses steps for such images.
    fn machine(&self) -> bool {
        true
    }

    /// The `launch` phase: temporary resources and the machine, until it runs.
    async fn launch(&mut self) -> Result<(), BuildError>;

    /// The `connect` phase: log in to the machine.
    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError>;

    /// The platform's own reboot (EC2 RebootInstances, QEMU system_reset) for reboot steps that ask
    /// for it.
    fn platform_reboot(&self) -> Option<Arc<dyn PlatformReboot>> {
        None
    }

    /// Resolves, with the error to report, if the machine is gone for good while the steps run (QEMU
    /// exited): provisioning stops at once instead of waiting for timeouts. Never, by default.
    async fn lost(&mut self) -> BuildError {
        std::future::pending().await
    }

    /// What the builder installed on the machine for the build, for the `sanitize` phase.
    fn sanitize_items(&self) -> SanitizeItems;

    /// The `shutdown` phase: stop the machine. `comm` is still connected (flush caches over it);
    /// disconnect it before the machine goes.
    async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError>;

    /// The `capture` phase: make the artifact.
    async fn capture(&mut self) -> Result<Artifact, BuildError>;

    /// The `distribute` phase: copy, share, mark complete. Returns the artifact as it is now.
    async fn distribute(&mut self, artifact: Artifact) -> Result<Artifact, BuildError> {
        Ok(artifact)
    }

    /// A phase failed with `error` (the communicator is already disconnected). Stop what must not
    /// outlive the process, or leave the machine up when the user keeps it for inspection
    /// ([`BuildJob::keep_on_failure`] and [`ErrorKind::Aborted`](crate::error::ErrorKind::Aborted)).
    /// The journal is unwound afterwards either way.
    async fn failed(&mut self, _error: &BuildError) {}
}

/// Run every phase of a build of `job` through `builder`, in order, emitting the phase events: the
/// one way a build happens (the scheduler calls it, and so does [`Builder::build`]). Unwinding the
/// journal is left to the caller.
pub async fn run<B: Builder + ?Sized>(builder: &B, job: &BuildJob) -> Result<Artifact, BuildError> {
    job.events.emit(EventKind::Phase { phase: Phase::Prepare });
    let mut build = builder.prepare(job).await?;
    match phases(build.as_mut(), job).await {
        Ok(artifact) => Ok(artifact),
        Err(e) => {
            build.failed(&e).await;
            Err(e)
        }
    }
}

/// The phases after `prepare`.
async fn phases(build: &mut (dyn Build + '_), job: &BuildJob) -> Result<Artifact, BuildError> {
    let phase = |phase| job.events.emit(EventKind::Phase { phase });
    if !build.machine() {
        phase(Phase::Capture);
        let artifact = build.capture().await?;
        phase(Phase::Distribute);
        return build.distribute(artifact).await;
    }
    phase(Phase::Launch);
    build.launch().await?;
    phase(Phase::Connect);
    let comm = build.connect().await?;
    if let Err(e) = provision(build, job, comm.as_ref()).await {
        comm.disconnect().await;
        return Err(e);
    }
    phase(Phase::Shutdown);
    let stopped = build.shutdown(comm.as_ref()).await;
    // Idempotent: the builder disconnected already unless it failed before doing so.
    comm.disconnect().await;
    stopped?;
    phase(Phase::Capture);
    let artifact = build.capture().await?;
    phase(Phase::Distribute);
    build.distribute(artifact).await
}

/// The `provision` and `sanitize` phases: the same for every builder.
async fn provision(build: &mut (dyn Build + '_), job: &BuildJob, comm: &dyn Communicator) -> Result<(), BuildError> {
    job.events.emit(EventKind::Phase { phase: Phase::Provision });
    let reboot = build.platform_reboot();
    tokio::select! {
        r = job.provisioner.provision(comm, reboot) => r?,
        e = build.lost() => return Err(e),
    }
    job.events.emit(EventKind::Phase { phase: Phase::Sanitize });
    let items = build.sanitize_items();
    job.provisioner.sanitize(comm, &items).await
}

/// A platform that builds images.
#[async_trait]
pub trait Builder: Send + Sync {
    /// Its name in tree files (`aws`, `qemu`).
    fn kind(&self) -> &'static str;

    /// Resolve where a root image starts (an AMI filter to the newest matching AMI id...).
    async fn resolve_source(&self, tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError>;

    /// Every artifact this builder can find for these images (by their tags), in as few calls as the
    /// platform allows — planning a large tree must not cost a call per image.
    async fn list_artifacts(&self, tree: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError>;

    /// The `prepare` phase of a build of `job`: check everything that can be checked before anything
    /// exists, and start the build's state, which core then drives through the other phases.
    async fn prepare<'a>(&'a self, job: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError>;

    /// Build one image: every phase, in order ([`run`]), without unwinding the journal afterwards.
    /// Builders do not override it.
    async fn build(&self, job: BuildJob) -> Result<Artifact, BuildError> {
        run(self, &job).await
    }

    /// Remove one resource recorded in a journal (or found by [`Builder::sweep`]). Removing something
    /// that is already gone is success.
    async fn destroy(&self, tree: &Tree, resource: &Resource, events: &EventSink) -> Result<(), BuildError>;

    /// Find resources imgbake created that are still around (leaked temporary resources, half-made
    /// artifacts of failed builds), for `imgbake clean`. Complete artifacts are never returned.
    async fn sweep(&self, tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError>;

    /// Delete an artifact for good (pruning): everywhere it was copied, with its storage.
    async fn delete_artifact(&self, tree: &Tree, artifact: &Artifact, events: &EventSink) -> Result<(), BuildError>;

    /// Where runs on different machines agree that one of them builds `image` at a time (`imgbake
    /// build --lease`, see [`crate::lease`]). `None`: this builder has no shared place for it (local
    /// builds), and the run builds without one.
    async fn lease_store(
        &self,
        _tree: &Tree,
        _image: &Image,
    ) -> Result<Option<std::sync::Arc<dyn crate::lease::LeaseStore>>, BuildError> {
        Ok(None)
    }

    /// The artifact ids an image's announcement points at now (what consumers launch); pruning never
    /// deletes them.
    async fn published(&self, _tree: &Tree, _image: &Image) -> Result<Vec<String>, BuildError> {
        Ok(Vec::new())
    }

    /// Where `image`'s release channel `channel` points now, with its history (see
    /// [`crate::channel`]). `None`: this builder keeps no channels (the default).
    async fn channel(
        &self,
        _tree: &Tree,
        _image: &Image,
        _channel: &str,
    ) -> Result<Option<crate::channel::ChannelState>, BuildError> {
        Ok(None)
    }

    /// Point `image`'s channel `channel` at `artifact` everywhere the artifact is, storing `record`
    /// with it ([`PointRecord::to_text`](crate::channel::PointRecord::to_text)). Returns what was
    /// written, for people. Builders that keep channels implement it with [`Builder::channel`];
    /// the default keeps none and writes nothing (so builds of its images in a tree with channels
    /// go on; `promote` refuses them, as [`Builder::channel`] says `None`).
    async fn point(
        &self,
        _tree: &Tree,
        _image: &Image,
        _channel: &str,
        _artifact: &Artifact,
        _record: &crate::channel::PointRecord,
        _events: &EventSink,
    ) -> Result<Vec<String>, BuildError> {
        Ok(Vec::new())
    }

    /// The machines running from images where this builder's `images` are (AWS: running and
    /// pending EC2 instances in the images' regions), each with the tags of the image it runs, for
    /// `imgbake audit` ([`crate::audit`]). `None`: this builder cannot list running machines (the
    /// default); the audit says so.
    async fn running_machines(
        &self,
        _tree: &Tree,
        _images: &[&Image],
    ) -> Result<Option<Vec<crate::audit::RunningMachine>>, BuildError> {
        Ok(None)
    }

    /// Put a label (`key` = `value`) on an artifact everywhere it is (AWS: a tag on each AMI), to be
    /// read back into [`Artifact::extra`] by [`Builder::list_artifacts`]. Default: nothing.
    async fn label(&self, _tree: &Tree, _artifact: &Artifact, _key: &str, _value: &str) -> Result<(), BuildError> {
        Ok(())
    }

    /// Before the run builds `image`: can its `publish` work (credentials given, the target
    /// reachable)? Called only when the run publishes. Default: nothing to check.
    async fn check_publish(&self, _tree: &Tree, _image: &Image) -> Result<(), BuildError> {
        Ok(())
    }

    /// Does `image`'s announcement already name `artifact`? Asked when a run reuses an artifact of
    /// an image that publishes: `Some(false)` makes the run publish it again (an earlier publish
    /// failed half-way, or the build ran with `--no-publish`), so consumers are never left behind
    /// an artifact that exists. `None` (the default): the builder cannot tell, nothing is redone.
    /// [`Builder::publish`] must then be safe to repeat for the same artifact.
    async fn is_published(
        &self,
        _tree: &Tree,
        _image: &Image,
        _artifact: &Artifact,
    ) -> Result<Option<bool>, BuildError> {
        Ok(None)
    }

    /// Announce an image's newest artifact (e.g. SSM parameters). Returns what was written, for people.
    async fn publish(
        &self,
        _tree: &Tree,
        _image: &Image,
        _artifact: &Artifact,
        _events: &EventSink,
    ) -> Result<Vec<String>, BuildError> {
        Ok(Vec::new())
    }
}

/// Remove one resource through its builder — the one removal path of imgbake: destroy it, take it
/// off `journal` (when it is on one: a build's, or an interrupted build's during `imgbake clean`), and
/// say so with [`EventKind::ResourceDeleted`](crate::event::EventKind::ResourceDeleted). A failure to
/// destroy is returned and the entry stays journaled, so a later `imgbake clean` retries it; a failure
/// to update the journal after the resource is gone is only warned about (retrying finds it gone).
pub async fn remove<B: Builder + ?Sized>(
    builder: &B,
    tree: &Tree,
    journal: Option<&Journal>,
    resource: &Resource,
    events: &EventSink,
) -> Result<(), BuildError> {
    builder.destroy(tree, resource, events).await?;
    if let Some(journal) = journal
        && let Err(e) = journal.done(resource)
    {
        events.warn(format!("removed {} but could not update the journal: {e}", resource.describe()));
    }
    events.emit(crate::event::EventKind::ResourceDeleted {
        kind: format!("{}.{}", resource.builder, resource.kind),
        id: resource.id.clone(),
        region: resource.region.clone(),
    });
    Ok(())
}

/// Remove everything still on `journal`, newest first, through `builder`. Failures do not stop the
/// unwinding; they are returned (the journal keeps them, so `imgbake clean` can retry). The journal
/// file is deleted once nothing is pending.
pub async fn unwind(
    journal: &Journal,
    builder: &dyn Builder,
    tree: &Tree,
    events: &EventSink,
) -> Vec<(Resource, BuildError)> {
    let mut failed = Vec::new();
    let pending = journal.pending();
    if !pending.is_empty() {
        events.emit(EventKind::Phase { phase: Phase::Cleanup });
    }
    for r in pending.into_iter().rev() {
        if let Err(e) = remove(builder, tree, Some(journal), &r, events).await {
            events.warn(format!("could not remove {}: {}", r.describe(), e.chain()));
            failed.push((r, e));
        }
    }
    if let Err(e) = journal.finish() {
        events.warn(format!("could not remove the cleanup journal: {e}"));
    }
    failed
}
