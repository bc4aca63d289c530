//! The `shutdown`, `capture` and `distribute` phases: stop the machine, make the AMI, then copy and
//! share it while the machine and the temporary resources are removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::settings::AwsSettings;
use aws_sdk_ec2::types::Tag;
use chrono::Utc;
use imgbake_core::artifact::{Artifact, tags as keys};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::BuildError;

use super::{AwsBuild, Ctx, DEFAULT_IMAGE_TIMEOUT, TAG_TIMEOUT, replace, span};
use crate::clients::{Clients, Session};
use crate::error::config;
use crate::tags::COMPLETE;
use crate::timing::Change;
use crate::{copy, image, launch, waiters};

/// The AMI made in the build region, until it is distributed.
pub(super) struct Captured {
    pub(super) ami: String,
    /// Its journal entry (naming its snapshots).
    pub(super) entry: Resource,
    pub(super) snaps: Vec<String>,
    pub(super) tags: Vec<Tag>,
    pub(super) timeout: Duration,
}

/// The `shutdown` phase: stop the machine and wait until it is stopped.
pub(super) async fn stop(build: &mut AwsBuild<'_>) -> Result<(), BuildError> {
    let (ctx, c, id, region) = (&build.ctx, &build.ctx.c, build.instance_id.as_str(), build.region.as_str());
    let started = tokio::time::Instant::now();
    let stopping = launch::stop(c, id).await.map_err(ctx.on("stopping the build machine", region))?;
    let stopping = (stopping != "stopped").then_some(stopping.as_str());
    waiters::instance(
        c,
        id,
        "stopped",
        &["shutting-down", "terminated"],
        stopping,
        &ctx.wait(build.instance_timeout),
        &ctx.watch(region, Change::Stopped, started),
        &ctx.events,
    )
    .await
    .map_err(ctx.on("waiting for the build machine to stop", region))?;
    Ok(())
}

/// The `capture` phase: CreateImage, until the AMI is available.
pub(super) async fn capture(build: &mut AwsBuild<'_>) -> Result<Artifact, BuildError> {
    let (ctx, a, c, session, region) = (&build.ctx, build.ctx.a, &build.ctx.c, &build.session, build.region.as_str());
    let (job, instance_id, ami_name) = (ctx.job, build.instance_id.as_str(), build.ami_name.as_str());
    let ami_tags = ctx.ami_tags(&build.source_id);
    let started = tokio::time::Instant::now();
    let (ami, ami_r) = ctx
        .create(session, "image", &[], || {
            image::create(c, instance_id, ami_name, a.ami_description.as_deref(), &ami_tags)
        })
        .await
        .map_err(|e| e.at(a.ami_name.as_ref().map(span)))
        .map_err(ctx.on("creating the AMI", region))?;
    let image_timeout = a.image_timeout.map(|d| d.get()).unwrap_or(DEFAULT_IMAGE_TIMEOUT);
    let watch = ctx.watch(region, Change::Available, started);
    let made = waiters::image(c, &ami, &ctx.wait(image_timeout), &watch, &ctx.events)
        .await
        .map_err(ctx.on("waiting for the AMI", region))?;
    let snaps = image::snapshots(&made);
    // The entry now names the snapshots, so a retried cleanup still finds them after the AMI is gone.
    let ami_r = replace(job, ami_r, session.resource("image", &ami).with("snapshots", snaps.join(",")))?;
    let artifact = Artifact {
        image: job.image.clone(),
        builder: "aws".into(),
        id: ami.clone(),
        locations: BTreeMap::from([(region.to_string(), ami.clone())]),
        fingerprint: job.fingerprint.clone(),
        source: build.source_id.clone(),
        parent: ctx.image.parent.as_ref().map(|p| p.get_ref().clone()),
        build_id: job.build_id.clone(),
        created: build.created,
        extra: BTreeMap::from([(format!("snapshots.{region}"), snaps.join(","))]),
    };
    build.captured = Some(Captured { ami, entry: ami_r, snaps, tags: ami_tags, timeout: image_timeout });
    Ok(artifact)
}

/// The `distribute` phase: copies, sharing and the completion tag, while the machine and the temporary
/// resources go; then the AMIs are released from the journal (kept for good) and old AMIs of the same
/// name deregistered (`force_deregister`).
pub(super) async fn distribute(build: &mut AwsBuild<'_>, artifact: Artifact) -> Result<Artifact, BuildError> {
    let Some(captured) = &build.captured else { return Ok(artifact) };
    let made = Made {
        ctx: &build.ctx,
        session: &build.session,
        captured,
        temporaries: &build.temporaries,
        ami_name: &build.ami_name,
        replaced: &build.replaced,
    };
    made.distribute(artifact).await
}

/// An AMI made in the build region (on a machine or from a disk), to distribute.
pub(super) struct Made<'b, 'a> {
    pub(super) ctx: &'b Ctx<'a>,
    pub(super) session: &'b Session,
    pub(super) captured: &'b Captured,
    /// What the build still has to remove (the machine, its key pair and security group).
    pub(super) temporaries: &'b [Resource],
    pub(super) ami_name: &'b str,
    /// AMIs of the same name, deregistered once this one is ready (`force_deregister`).
    pub(super) replaced: &'b [(Arc<Clients>, aws_sdk_ec2::types::Image)],
}

impl Made<'_, '_> {
    /// Copies, sharing and the completion tag, while the temporaries go; then the AMIs are released
    /// from the journal and the replaced ones deregistered.
    pub(super) async fn distribute(&self, mut artifact: Artifact) -> Result<Artifact, BuildError> {
        let (ctx, session, cap) = (self.ctx, self.session, self.captured);
        let cleanup = async {
            // The machine first: the security group can only go once it is terminated.
            for r in self.temporaries.iter().rev() {
                ctx.remove(r).await;
            }
        };
        let finish = finish(ctx, session, &cap.ami, self.ami_name, &cap.snaps, &cap.tags, cap.timeout);
        let ((), finished) = tokio::join!(cleanup, finish);
        let (locations, mut extra, entries) =
            finished.map_err(ctx.on("finishing the AMI (tags, copies, sharing)", &session.region))?;
        for r in std::iter::once(&cap.entry).chain(&entries) {
            ctx.job.release(r)?;
        }
        deregister_replaced(ctx, self.ami_name, self.replaced).await;
        extra.insert("name".into(), self.ami_name.to_string());
        artifact.locations = locations;
        artifact.extra = extra;
        Ok(artifact)
    }
}

/// `force_deregister`: the old AMIs of this name go only now that the new one is ready.
async fn deregister_replaced(ctx: &Ctx<'_>, ami_name: &str, replaced: &[(Arc<Clients>, aws_sdk_ec2::types::Image)]) {
    for (c, old) in replaced {
        let id = old.image_id().unwrap_or_default();
        match image::remove(c, id, &image::snapshots(old), &ctx.wait(ctx.b.options().cleanup_timeout)).await {
            Ok(()) => ctx.events.info(format!("deregistered the old AMI {id} named `{ami_name}` ({})", c.region())),
            Err(e) => ctx.events.warn(format!(
                "could not deregister the old AMI {id} named `{ami_name}` ({}): {}; remove it by hand",
                c.region(),
                e.chain()
            )),
        }
    }
}

type Finished = (BTreeMap<String, String>, BTreeMap<String, String>, Vec<Resource>);

/// Copies (in parallel), launch permissions, deprecation, then the completion tag on every AMI.
/// Returns region → AMI, the artifact's extra details, and the copies' journal entries.
async fn finish(
    ctx: &Ctx<'_>,
    session: &Session,
    ami: &str,
    name: &str,
    snaps: &[String],
    ami_tags: &[Tag],
    image_timeout: Duration,
) -> Result<Finished, BuildError> {
    let a = ctx.a;
    let region = session.region.clone();
    let complete = Tag::builder().key(COMPLETE).value("true").build();
    let mut locations = BTreeMap::new();
    let mut extra = BTreeMap::new();
    locations.insert(region.clone(), ami.to_string());
    extra.insert(format!("snapshots.{region}"), snaps.join(","));
    let imds_v2 = a.imds_v2.unwrap_or(true);
    if a.copy_regions.is_empty() && a.share.is_none() && a.deprecate_after.is_none() && a.snapshot_tags.is_empty() {
        if imds_v2 {
            image::require_imds_v2(&ctx.c, ami).await?;
        }
        // Nothing else to do: one call tags the snapshots (with the AMI's tags) and marks both complete.
        let mut t = ami_tags.to_vec();
        t.push(complete);
        t.extend(ctx.waits_tag(&region));
        let ids: Vec<String> = std::iter::once(ami.to_string()).chain(snaps.iter().cloned()).collect();
        image::tag(&ctx.c, &ids, &t, &ctx.wait(TAG_TIMEOUT)).await?;
        return Ok((locations, extra, Vec::new()));
    }
    image::tag(&ctx.c, snaps, &ctx.snapshot_tags(ami_tags), &ctx.wait(TAG_TIMEOUT)).await?;
    let copies = a.copy_regions.iter().map(|r| copy_to(ctx, session, r, ami, name, ami_tags, image_timeout));
    let copies = futures::future::try_join_all(copies).await?;

    let mut all: Vec<(Arc<Clients>, String, Vec<String>)> = vec![(ctx.c.clone(), ami.to_string(), snaps.to_vec())];
    let mut entries = Vec::new();
    for (c, id, s, r) in copies {
        all.push((c, id, s));
        entries.push(r);
    }
    if imds_v2 {
        // Copies get it too: the attribute is the AMI's, and every region's AMI is launched.
        for (c, id, _) in &all {
            image::require_imds_v2(c, id).await?;
        }
    }
    if let Some(share) = &a.share {
        for (c, id, s) in &all {
            crate::share::grant(c, id, s, share).await?;
        }
    }
    if let Some(d) = &a.deprecate_after {
        // Validation rejects longer ones; capped again so no value can overflow the date.
        let after = d.get_ref().get().min(AwsSettings::MAX_DEPRECATE_AFTER);
        let at =
            chrono::Duration::from_std(after).ok().and_then(|a| Utc::now().checked_add_signed(a)).ok_or_else(|| {
                config(format!("deprecate_after `{}` is too far ahead (at most 3650d)", d.get_ref())).at(span(d))
            })?;
        for (c, id, _) in &all {
            crate::share::deprecate(c, id, at).await.map_err(|e| BuildError::from(e).at(span(d)))?;
        }
    }
    for (c, id, s) in &all {
        let last: Vec<Tag> = std::iter::once(complete.clone()).chain(ctx.waits_tag(c.region())).collect();
        image::tag(c, std::slice::from_ref(id), &last, &ctx.wait(TAG_TIMEOUT)).await?;
        locations.insert(c.region().to_string(), id.clone());
        extra.insert(format!("snapshots.{}", c.region()), s.join(","));
    }
    Ok((locations, extra, entries))
}

/// Copy the AMI to one region and wait for it; tag the copy's snapshots (and the copy, where EC2
/// ignored the tags of CopyImage).
async fn copy_to(
    ctx: &Ctx<'_>,
    session: &Session,
    to: &imgbake_config::Spanned<String>,
    ami: &str,
    name: &str,
    ami_tags: &[Tag],
    image_timeout: Duration,
) -> Result<(Arc<Clients>, String, Vec<String>, Resource), BuildError> {
    let dst_session = session.in_region(to.get_ref());
    let dst = ctx.b.clients(&dst_session).await;
    let a = ctx.a;
    let spec = copy::Copy {
        from_region: session.region.clone(),
        from_image: ami.to_string(),
        name: name.to_string(),
        description: a.ami_description.clone(),
        encrypted: a.encrypt.unwrap_or(false),
        kms_key_id: a.region_kms_key_ids.get(to.get_ref()).cloned(),
        tags: ami_tags.to_vec(),
        client_token: format!("imgbake-{}-{}", ctx.job.build_id, uuid::Uuid::new_v4().simple()),
    };
    let started = tokio::time::Instant::now();
    let (id, r) =
        ctx.create(&dst_session, "image", &[], || copy::start(&dst, &spec)).await.map_err(|e| e.at(span(to)))?;
    let watch = ctx.watch(to.get_ref(), Change::Copied, started);
    let made = waiters::image(&dst, &id, &ctx.wait(image_timeout), &watch, &ctx.events).await?;
    let snaps = image::snapshots(&made);
    let r = replace(ctx.job, r, dst_session.resource("image", &id).with("snapshots", snaps.join(",")))?;
    let have = crate::tags::to_map(made.tags());
    if have.get(keys::BUILD_ID).map(String::as_str) != Some(ctx.tags.build_id()) {
        image::tag(&dst, std::slice::from_ref(&id), ami_tags, &ctx.wait(TAG_TIMEOUT)).await?;
    }
    image::tag(&dst, &snaps, &ctx.snapshot_tags(ami_tags), &ctx.wait(TAG_TIMEOUT)).await?;
    Ok((dst, id, snaps, r))
}
