//! An AMI made from the parent's disk file, without a build machine (`aws.import = "ebs-direct"`):
//!
//! - `prepare`: the parent's disk is flattened to a sparse raw file and read — boot mode,
//!   architecture, the ENA and NVMe drivers EC2 needs — before any AWS call; then the credentials,
//!   the regions and the AMI name are checked like any AWS build;
//! - `capture`: the disk goes into a new snapshot through the EBS direct APIs ([`crate::ebs_direct`]),
//!   then RegisterImage, until the AMI is available;
//! - `distribute`: copies, sharing, tags, exactly as for an AMI made on a machine.
//!
//! The snapshot is journaled from the moment StartSnapshot answers (an intent entry covers the call
//! itself), and the AMI once registered, so every exit path removes what was made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use imgbake_core::artifact::{Artifact, DISK_LOCATION};
use imgbake_core::builder::{Build, BuildJob, BuildSource};
use imgbake_core::cleanup::Resource;
use imgbake_core::communicator::Communicator;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::sanitize::SanitizeItems;

use super::capture::{Captured, Made};
use super::{Ctx, DEFAULT_IMAGE_TIMEOUT, clean_name, replace, span};
use crate::AwsBuilder;
use crate::clients::{Clients, Session};
use crate::destroy::intent;
use crate::disk::Inspection;
use crate::error::config;
use crate::timing::Change;
use crate::{disk, ebs_direct, image, waiters};

/// How long EC2 may take to mark an uploaded snapshot `completed`.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// An AMI being made from a disk.
pub(crate) struct ImportBuild<'a> {
    ctx: Ctx<'a>,
    session: Session,
    region: String,
    created: DateTime<Utc>,
    /// The parent's disk file, as its builder made it.
    disk: PathBuf,
    /// Holds the flattened raw disk; removed when the build ends, however it ends (dropped).
    _scratch: tempfile::TempDir,
    raw: PathBuf,
    inspection: Inspection,
    architecture: String,
    ami_name: String,
    replaced: Vec<(Arc<Clients>, aws_sdk_ec2::types::Image)>,
    captured: Option<Captured>,
}

/// The `prepare` phase of an AMI made from the parent's disk.
pub(crate) async fn prepare<'a>(b: &'a AwsBuilder, job: &'a BuildJob) -> Result<ImportBuild<'a>, BuildError> {
    let (ctx, session, created) = Ctx::start(b, job).await?;
    let (a, c) = (ctx.a, ctx.c.clone());
    let region_v = crate::region(ctx.image)?;
    let region = session.region.clone();

    // Local first: a disk EC2 cannot boot fails before any AWS call.
    let disk = parent_disk(job)?;
    let state = job.tree.state_dir();
    std::fs::create_dir_all(&state)
        .map_err(|e| BuildError::new(ErrorKind::Local, format!("cannot create {}: {e}", state.display())))?;
    let scratch = tempfile::Builder::new().prefix("import-").tempdir_in(&state).map_err(|e| {
        BuildError::new(ErrorKind::Local, format!("cannot make a scratch directory in {}: {e}", state.display()))
    })?;
    let raw = scratch.path().join("disk.raw");
    ctx.events.info(format!("reading the disk {}", disk.display()));
    let raw_size = disk::to_raw(&disk, &raw).await?;
    let check_drivers = a.check_drivers.unwrap_or(true);
    let inspection = disk::inspect(&raw, check_drivers).await.map_err(|e| on_disk(&e, job, &disk))?;
    if check_drivers && !inspection.missing_drivers.is_empty() {
        return Err(config(format!(
            "the disk of image `{}`'s parent ({}, kernel {}) lacks the {} driver{} EC2 needs: instances of such an AMI do not boot or have no network on current instance types; install a kernel that has them in the parent (Debian: linux-image-cloud-amd64 or linux-image-amd64), or set aws.check_drivers = false if you know better",
            job.image,
            disk.display(),
            inspection.kernel.as_deref().unwrap_or("unknown"),
            inspection.missing_drivers.join(" and "),
            if inspection.missing_drivers.len() > 1 { "s" } else { "" },
        ))
        .at(a.import.as_ref().map(span)));
    }
    let architecture = match (&a.architecture, &inspection.architecture) {
        (Some(set), _) => set.get_ref().clone(),
        (None, Some(found)) => found.clone(),
        (None, None) => {
            return Err(config(format!(
                "cannot tell the architecture of the disk {} of image `{}`: set aws.architecture (x86_64 or arm64)",
                disk.display(),
                job.image
            ))
            .at(a.import.as_ref().map(span)));
        }
    };
    let boot_mode = a.boot_mode.as_ref().map(|m| m.get_ref().as_str()).unwrap_or(&inspection.boot_mode);
    if architecture == "arm64" && boot_mode != "uefi" {
        return Err(config(format!(
            "the disk {} of image `{}` is arm64 with boot mode {boot_mode}, but arm64 instances boot with UEFI only: give the parent a GPT disk with an EFI system partition (and no BIOS boot), or set aws.boot_mode = \"uefi\" if it boots that way",
            disk.display(),
            job.image
        ))
        .at(a.import.as_ref().map(span)));
    }
    ctx.events.info(format!(
        "disk {}: {} GiB, boot mode {}, {architecture}, kernel {}",
        disk.display(),
        raw_size.div_ceil(1 << 30),
        a.boot_mode.as_ref().map(|m| m.get_ref().as_str()).unwrap_or(&inspection.boot_mode),
        inspection.kernel.as_deref().unwrap_or("not checked"),
    ));

    c.check_credentials().await?;
    b.check_regions(&c, a, region_v).await?;
    c.identity().await.map_err(ctx.on("checking the AWS credentials", &region))?;
    let ami_name = match &a.ami_name {
        Some(n) => n.get_ref().clone(),
        None => clean_name(&format!("{}-{}", job.image, created.timestamp())),
    };
    let replaced = super::prepare::same_name(&ctx, &session, &ami_name).await?;
    Ok(ImportBuild {
        ctx,
        session,
        region,
        created,
        disk,
        _scratch: scratch,
        raw,
        inspection,
        architecture,
        ami_name,
        replaced,
        captured: None,
    })
}

/// The parent artifact's disk file.
fn parent_disk(job: &BuildJob) -> Result<PathBuf, BuildError> {
    let BuildSource::Parent(parent) = &job.source else {
        return Err(config(format!("image `{}` imports a disk with aws.import but has no parent artifact", job.image)));
    };
    let Some(path) = parent.locations.get(DISK_LOCATION) else {
        return Err(config(format!(
            "image `{}` imports its parent's disk, but the parent's `{}` artifact {} is not a disk file",
            job.image, parent.builder, parent.id
        )));
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(BuildError::new(
            ErrorKind::Local,
            format!(
                "the disk {} of image `{}` (the parent's artifact) is missing: rebuild the parent (imgbake build --only {} --force)",
                path.display(),
                job.image,
                parent.image
            ),
        ));
    }
    Ok(path)
}

fn on_disk(e: &BuildError, job: &BuildJob, disk: &std::path::Path) -> BuildError {
    BuildError::new(e.kind, format!("reading the disk {} for image `{}`: {}", disk.display(), job.image, e.message))
}

impl ImportBuild<'_> {
    /// The disk into a snapshot, journaled from StartSnapshot on; then until EC2 says it is complete.
    async fn snapshot(&self, tags: &[aws_sdk_ec2::types::Tag]) -> Result<(String, Resource, i64), BuildError> {
        let (ctx, a, session) = (&self.ctx, self.ctx.a, &self.session);
        let opts = ebs_direct::UploadOptions {
            description: format!("imgbake {} {} from {}", ctx.job.image, ctx.job.build_id, self.disk.display()),
            tags: tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
            encrypted: a.encrypt.unwrap_or(false),
            kms_key_arn: a.kms_key_id.clone(),
            client_token: Some(format!("imgbake-{}-{}", ctx.job.build_id, uuid::Uuid::new_v4().simple())),
            ..Default::default()
        };
        let pending = intent(session, "snapshot", &ctx.job.build_id, &ctx.job.image);
        ctx.job.record(pending.clone())?;
        let entry = std::sync::Mutex::new(None::<Resource>);
        let started = |id: &str| {
            let r = session.resource("snapshot", id);
            ctx.job.record(r.clone())?;
            if let Ok(mut e) = entry.lock() {
                *e = Some(r);
            }
            ctx.job.release(&pending)
        };
        let region = self.region.as_str();
        let up = match ebs_direct::upload(&ctx.c, &self.raw, &opts, &started, &ctx.events).await {
            Ok(up) => up,
            Err(e) => {
                // StartSnapshot refused: it made nothing, so there is nothing for the intent to find.
                let began = entry.lock().map(|e| e.is_some()).unwrap_or(true);
                if !began && e.kind == ErrorKind::Config {
                    ctx.job.release(&pending)?;
                }
                return Err(ctx.on("uploading the disk into a snapshot", region)(e));
            }
        };
        let entry = entry.into_inner().ok().flatten().unwrap_or_else(|| session.resource("snapshot", &up.snapshot_id));
        let secs = up.elapsed.as_secs_f64().max(0.001);
        ctx.events.info(format!(
            "uploaded {} MB of data ({} blocks of {} KiB) into {} in {:.1} s ({:.0} MB/s)",
            up.bytes_written / 1_000_000,
            up.blocks_written,
            up.block_size / 1024,
            up.snapshot_id,
            secs,
            up.bytes_written as f64 / 1e6 / secs
        ));
        ebs_direct::wait_completed(&ctx.c, &up.snapshot_id, SNAPSHOT_TIMEOUT)
            .await
            .map_err(ctx.on("waiting for the snapshot", region))?;
        Ok((up.snapshot_id, entry, up.volume_size_gib))
    }
}

#[async_trait::async_trait]
impl Build for ImportBuild<'_> {
    fn machine(&self) -> bool {
        false
    }

    async fn launch(&mut self) -> Result<(), BuildError> {
        Err(no_machine())
    }

    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
        Err(no_machine())
    }

    fn sanitize_items(&self) -> SanitizeItems {
        SanitizeItems::default()
    }

    async fn shutdown(&mut self, _comm: &dyn Communicator) -> Result<(), BuildError> {
        Err(no_machine())
    }

    /// Snapshot, RegisterImage, until the AMI is available.
    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        let (ctx, a, session, region) = (&self.ctx, self.ctx.a, &self.session, self.region.as_str());
        let job = ctx.job;
        let source = match &job.source {
            BuildSource::Parent(p) => p.id.clone(),
            BuildSource::Root(r) => r.id.clone(),
        };
        let ami_tags = ctx.ami_tags(&source);
        let (snapshot, snap_entry, snap_gib) = self.snapshot(&ctx.snapshot_tags(&ami_tags)).await?;
        let first = a.block_devices.first();
        let set_gib = first.and_then(|d| d.volume_size.as_ref()).and_then(|s| s.get_ref().whole_gib()).unwrap_or(0);
        let volume_gib = i32::try_from(set_gib.max(u64::try_from(snap_gib).unwrap_or(0))).unwrap_or(i32::MAX);
        let registration = image::Registration {
            name: self.ami_name.clone(),
            description: a.ami_description.clone(),
            architecture: self.architecture.clone(),
            boot_mode: a.boot_mode.as_ref().map(|m| m.get_ref().clone()).unwrap_or(self.inspection.boot_mode.clone()),
            snapshot: snapshot.clone(),
            volume_gib,
            volume_type: first.and_then(|d| d.volume_type.clone()).unwrap_or_else(|| "gp3".into()),
            imds_v2: a.imds_v2.unwrap_or(true),
            tags: ami_tags.clone(),
        };
        let started = tokio::time::Instant::now();
        let (ami, ami_r) = ctx
            .create(session, "image", &[("snapshots", snapshot.clone())], || image::register(&ctx.c, &registration))
            .await
            .map_err(|e| e.at(a.ami_name.as_ref().map(span)))
            .map_err(ctx.on("registering the AMI", region))?;
        // The AMI's entry names the snapshot: removing the AMI removes it too.
        job.release(&snap_entry)?;
        let image_timeout = a.image_timeout.map(|d| d.get()).unwrap_or(DEFAULT_IMAGE_TIMEOUT);
        let watch = ctx.watch(region, Change::Available, started);
        let made = waiters::image(&ctx.c, &ami, &ctx.wait(image_timeout), &watch, &ctx.events)
            .await
            .map_err(ctx.on("waiting for the AMI", region))?;
        // The uploaded snapshot, and whatever else the AMI lists (the same one, on EC2).
        let others: Vec<String> = image::snapshots(&made).into_iter().filter(|s| *s != snapshot).collect();
        let snaps: Vec<String> = std::iter::once(snapshot).chain(others).collect();
        // Tags given at RegisterImage are the AMI's; where an endpoint ignored them, they go on now.
        let have = crate::tags::to_map(made.tags());
        if have.get(imgbake_core::artifact::tags::BUILD_ID).map(String::as_str) != Some(ctx.tags.build_id()) {
            image::tag(&ctx.c, std::slice::from_ref(&ami), &ami_tags, &ctx.wait(super::TAG_TIMEOUT))
                .await
                .map_err(ctx.on("tagging the AMI", region))?;
        }
        let ami_r = replace(job, ami_r, session.resource("image", &ami).with("snapshots", snaps.join(",")))?;
        let artifact = Artifact {
            image: job.image.clone(),
            builder: crate::validate::NAME.into(),
            id: ami.clone(),
            locations: BTreeMap::from([(region.to_string(), ami.clone())]),
            fingerprint: job.fingerprint.clone(),
            source,
            parent: ctx.image.parent.as_ref().map(|p| p.get_ref().clone()),
            build_id: job.build_id.clone(),
            created: self.created,
            extra: BTreeMap::from([(format!("snapshots.{region}"), snaps.join(","))]),
        };
        self.captured = Some(Captured { ami, entry: ami_r, snaps, tags: ami_tags, timeout: image_timeout });
        Ok(artifact)
    }

    async fn distribute(&mut self, artifact: Artifact) -> Result<Artifact, BuildError> {
        let Some(captured) = &self.captured else { return Ok(artifact) };
        let made = Made {
            ctx: &self.ctx,
            session: &self.session,
            captured,
            temporaries: &[],
            ami_name: &self.ami_name,
            replaced: &self.replaced,
        };
        made.distribute(artifact).await
    }
}

fn no_machine() -> BuildError {
    BuildError::new(ErrorKind::Local, "an AMI made from a disk (aws.import) has no build machine")
}
