//! One build, in order: check everything that can be checked → key pair → security group → launch →
//! wait for `running` → SSH → provision → stop → image → (copies and sharing, while the build machine
//! and its temporary resources are removed) → completion tag.
//!
//! Every resource goes on the journal the moment it exists (an intent entry just before the create
//! call, see [`crate::destroy`]); the build removes its temporary resources itself once the image is
//! made, and releases the AMIs from the journal only when everything succeeded. On any failure the
//! scheduler's unwinding removes what is left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::Tag;
use chrono::{SubsecRound, Utc};
use imgbake_config::{Image, Os, Span};

use crate::settings::AwsSettings;
use imgbake_core::artifact::{Artifact, tags as keys};
use imgbake_core::builder::{BuildJob, BuildSource};
use imgbake_core::cleanup::Resource;
use imgbake_core::communicator::Communicator;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_ssh::SshCommunicator;
use imgbake_ssh::spec::{Machine, connect_wait, ssh_config};

use crate::clients::{Clients, Session};
use crate::destroy::intent;
use crate::error::{ApiError, SdkResultExt, config};
use crate::reboot::Ec2Reboot;
use crate::tags::{BuildTags, COMPLETE, role};
use crate::userdata::HostKey;
use crate::{AwsBuilder, copy, image, keypair, launch, preflight, security_group, userdata, waiters};

const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";
const DEFAULT_INSTANCE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The longest any wait of a build may be (`instance_timeout = "300000y"` must not overflow).
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long tagging waits for a just-created resource to be listed.
const TAG_TIMEOUT: Duration = Duration::from_secs(120);

/// What one build carries from step to step.
struct Ctx<'a> {
    b: &'a AwsBuilder,
    job: &'a BuildJob,
    image: &'a Image,
    a: &'a AwsSettings,
    c: Arc<Clients>,
    events: EventSink,
    tags: BuildTags,
}

impl Ctx<'_> {
    fn phase(&self, phase: &str) {
        self.events.emit(EventKind::Phase { phase: phase.into() });
    }

    /// Run `create` under an intent entry; journal what it made. Returns the id and its entry.
    async fn create<F, Fut>(&self, session: &Session, kind: &str, create: F) -> Result<(String, Resource), BuildError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String, ApiError>>,
    {
        let pending = intent(session, kind, &self.job.build_id, &self.job.image);
        self.job.record(pending.clone())?;
        let id = match create().await {
            Ok(id) => id,
            // EC2 refused the call (a 4xx that is not throttling): it made nothing, so there is
            // nothing for the intent to look for.
            Err(e) if e.status.is_some_and(|s| (400..500).contains(&s)) && !e.is_transient() => {
                self.job.release(&pending)?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let made = session.resource(kind, &id);
        self.job.record(made.clone())?;
        self.job.release(&pending)?;
        Ok((id, made))
    }

    /// Remove `r` now (the build is past needing it) and take it off the journal; a failure is left to
    /// the unwinding and only warned about.
    async fn remove(&self, r: &Resource) {
        match crate::destroy::destroy(self.b, r, &self.events).await {
            Ok(()) => {
                if let Err(e) = self.job.release(r) {
                    self.events.warn(format!("removed {} but could not update the journal: {e}", r.describe()));
                }
                self.events.emit(EventKind::ResourceDeleted {
                    kind: format!("aws.{}", r.kind),
                    id: r.id.clone(),
                    region: r.region.clone(),
                });
            }
            Err(e) => {
                self.events.warn(format!("could not remove {} yet (cleanup retries): {}", r.describe(), e.chain()))
            }
        }
    }

    /// An API error, saying for which image and what imgbake was doing.
    fn doing(&self, what: &str, e: ApiError) -> BuildError {
        let region = e.region.clone();
        BuildError::new(ErrorKind::Platform, format!("{what} for image {} in {region}: {e}", self.job.image))
            .caused_by(e)
    }

    /// Name the image and what imgbake was doing on an AWS failure or timeout: "launching the build
    /// machine for image web in eu-west-1: RunInstances in eu-west-1: …".
    fn on<'s, E: Into<BuildError>>(&'s self, what: &'s str, region: &'s str) -> impl FnOnce(E) -> BuildError + 's {
        move |e| {
            let mut e: BuildError = e.into();
            if matches!(e.kind, ErrorKind::Platform | ErrorKind::Timeout) {
                e.message = format!("{what} for image {} in {region}: {}", self.job.image, e.message);
            }
            e
        }
    }

    fn wait(&self, timeout: Duration) -> imgbake_core::wait::Wait {
        let mut polling = self.b.options().polling;
        if let Some(p) = &self.a.poll_interval {
            polling.max = p.get_ref().get().max(polling.initial);
        }
        // A deadline beyond what the clock can hold would panic; no wait needs more than a week.
        polling.wait(timeout.min(MAX_WAIT))
    }

    /// Tags of the AMI and its copies.
    fn ami_tags(&self, source: &str) -> Vec<Tag> {
        let mut extra: BTreeMap<String, String> = self.image.tags.clone();
        extra.extend(self.a.ami_tags.clone());
        let mut t = self.tags.with_role(role::ARTIFACT, &extra);
        t.push(Tag::builder().key(keys::FINGERPRINT).value(&self.job.fingerprint).build());
        t.push(Tag::builder().key(keys::SOURCE).value(source).build());
        if let BuildSource::Parent(p) = &self.job.source {
            t.push(Tag::builder().key(keys::PARENT).value(&p.id).build());
        }
        t
    }

    /// Tags of the snapshots: the AMI's, and `snapshot_tags` over them.
    fn snapshot_tags(&self, ami_tags: &[Tag]) -> Vec<Tag> {
        let mut m = crate::tags::to_map(ami_tags);
        for (k, v) in &self.a.snapshot_tags {
            // imgbake's own keys stay as they are.
            if !k.starts_with("imgbake:") {
                m.insert(k.clone(), v.clone());
            }
        }
        crate::tags::to_tags(&m)
    }
}

fn span<T>(v: &imgbake_config::Spanned<T>) -> Span {
    Span::new(v.span())
}

/// AMI names allow letters, digits, spaces and `( ) [ ] . / - ' @ _`.
fn clean_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c) { c } else { '-' }).collect()
}

/// The build.
pub async fn build(b: &AwsBuilder, job: BuildJob) -> Result<Artifact, BuildError> {
    let image = job.image()?;
    let a = crate::settings(image)?;
    let region_v = crate::region(image)?;
    let region = region_v.get_ref().clone();
    let session = Session::of(a, &region);
    let c = b.clients(&session).await;
    // Milliseconds: the `imgbake:created` tag keeps no more, and the artifact found again by its tags
    // must equal the one returned here. Whole seconds let two builds in one second tie, and prune
    // then took the older one for the newest.
    let created = Utc::now().trunc_subsecs(3);
    let tree_name = job.tree.name();
    let tree_id = crate::tree_id(&job.tree)?;
    let ctx = Ctx {
        b,
        job: &job,
        image,
        a,
        c: c.clone(),
        events: job.events.clone(),
        tags: BuildTags::new(&job.build_id, &job.image, &tree_name, &tree_id, created),
    };

    // --- Everything that can fail before anything exists.
    ctx.phase("prepare");
    c.check_credentials().await?;
    b.check_regions(&c, a, region_v).await?;
    c.identity().await.map_err(ctx.on("checking the AWS credentials", &region))?;
    let source_id = job.source.id_in(&region);
    let source_span = image.source.as_ref().map(span);
    let source_ami = b
        .source_ami(&c, &source_id)
        .await
        .map_err(|e| e.at(source_span))
        .map_err(ctx.on("checking the source AMI", &region))?;
    let os = image.communicator.os.unwrap_or_default();
    let temp_group = a.security_group_ids.is_empty();
    let private_ssh = a.ssh_interface.as_ref().is_some_and(|i| i.get_ref().starts_with("private"));
    let net = preflight::network(&c, a, temp_group && private_ssh && a.ssh_cidrs.is_empty())
        .await
        .map_err(ctx.on("checking the network settings", &region))?;
    let cidrs = if temp_group { preflight::ssh_cidrs(a, &net, &b.options().public_ip_url).await? } else { Vec::new() };
    let ssh_port = image.communicator.port.unwrap_or(22);
    let ami_name = match &a.ami_name {
        Some(n) => n.get_ref().clone(),
        None => clean_name(&format!("{}-{}", job.image, created.timestamp())),
    };
    let replaced = same_name(&ctx, &session, &ami_name).await?;

    let host_key = HostKey::generate(&format!("imgbake-{}", job.build_id)).map_err(config)?;
    let (login_key, login_public) = match &image.communicator.private_key_file {
        Some(f) => {
            let path = job.tree.path(f);
            let key = russh::keys::load_secret_key(&path, None).map_err(|e| {
                config(format!("cannot read communicator.private_key_file {}: {e}", path.display())).at(span(f))
            })?;
            let public = key.public_key().to_openssh().map_err(|e| config(format!("{}: {e}", path.display())))?;
            (None, public)
        }
        None => {
            let (k, public) = imgbake_ssh::generate_ed25519(&format!("imgbake-{}", job.build_id))?;
            (Some(k), public)
        }
    };
    let user_extra =
        match (&a.user_data, &a.user_data_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => {
                let path = job.tree.path(f);
                Some(std::fs::read_to_string(&path).map_err(|e| {
                    config(format!("cannot read aws.user_data_file {}: {e}", path.display())).at(span(f))
                })?)
            }
            (None, None) => None,
        };
    let user_data = match os {
        Os::Linux => userdata::linux(&host_key, user_extra.as_deref()),
        Os::Windows => userdata::windows(
            &host_key,
            &login_public,
            a.windows_openssh_url.as_deref().or(b.options().windows_openssh_url.as_deref()),
            ssh_port,
            user_extra.as_deref(),
        ),
    }
    .map_err(|e| config(format!("image `{}`: {e}", image.name)).at(a.user_data_file.as_ref().map(span)))?;
    if let Some(k) = &login_key
        && job.key_file.is_some()
    {
        let text = k
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|e| BuildError::new(ErrorKind::Local, format!("cannot encode the login key: {e}")))?;
        if let Some(path) = job.write_key_file(&text)? {
            ctx.events.info(format!(
                "the build machine's login key is in {} (ssh -i {} ...)",
                path.display(),
                path.display()
            ));
        }
    }
    let temporary = ctx.tags.with_role(role::TEMPORARY, &BTreeMap::new());

    // --- Temporary resources and the machine.
    ctx.phase("launch");
    let mut temporaries: Vec<Resource> = Vec::new();
    let key_name = match (&a.key_pair_name, os) {
        (Some(k), _) => Some(k.get_ref().clone()),
        // Windows logs in with the key the user data installs; EC2 key pairs there only encrypt the
        // Administrator password.
        (None, Os::Windows) => None,
        (None, Os::Linux) => {
            let name = keypair::name(&job.build_id, &job.image);
            // The name is known before the call: journal the real entry at once.
            let r = session.resource("key_pair", &name);
            job.record(r.clone())?;
            temporaries.push(r);
            match keypair::import(&c, &name, &login_public, &temporary).await {
                Ok(()) => {}
                // Someone else's key: not ours to delete when the build unwinds.
                Err(keypair::ImportError::Foreign(e)) => {
                    if let Some(r) = temporaries.pop() {
                        job.release(&r)?;
                    }
                    return Err(e);
                }
                Err(e) => return Err(ctx.on::<BuildError>("importing the temporary key pair", &region)(e.into())),
            }
            Some(name)
        }
    };
    let groups = if temp_group {
        let name = format!("imgbake-{}-{}", job.build_id, job.image);
        let (id, r) = ctx
            .create(&session, "security_group", || security_group::create(&c, &name, net.vpc_id.as_deref(), &temporary))
            .await
            .map_err(ctx.on("creating the temporary security group", &region))?;
        temporaries.push(r);
        security_group::allow_ssh(&c, &id, ssh_port, &cidrs)
            .await
            .map_err(ctx.on("opening SSH in the temporary security group", &region))?;
        vec![id]
    } else {
        a.security_group_ids.iter().map(|g| g.get_ref().clone()).collect()
    };
    let mut run_tags = a.run_tags.clone();
    run_tags.entry("Name".into()).or_insert_with(|| format!("imgbake {} ({})", job.image, job.build_id));
    let machine_tags = ctx.tags.with_role(role::BUILD_INSTANCE, &run_tags);
    let spec = launch::Launch {
        image_id: source_id.clone(),
        instance_type: a
            .instance_type
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into()),
        key_name,
        security_groups: groups,
        subnet_id: net.subnet_id.clone(),
        associate_public_ip: a.associate_public_ip,
        iam_instance_profile: a.iam_instance_profile.clone(),
        user_data: userdata::encode(&user_data),
        imds_v2: a.imds_v2.unwrap_or(true),
        block_devices: launch::block_devices(a, &source_ami),
        instance_tags: machine_tags.clone(),
        volume_tags: machine_tags,
        client_token: format!("imgbake-{}-{}", job.build_id, uuid::Uuid::new_v4().simple()),
    };
    let (instance_id, instance_r) = ctx
        .create(&session, "instance", || launch::run(&c, &spec))
        .await
        .map_err(|e| e.at(a.instance_type.as_ref().map(span)))
        .map_err(ctx.on("launching the build machine", &region))?;
    temporaries.push(instance_r.clone());
    let instance_timeout = a.instance_timeout.map(|d| d.get()).unwrap_or(DEFAULT_INSTANCE_TIMEOUT);
    let running = waiters::instance(
        &c,
        &instance_id,
        "running",
        &["shutting-down", "terminated", "stopping", "stopped"],
        Some("pending"),
        &ctx.wait(instance_timeout),
        &ctx.events,
    )
    .await
    .map_err(ctx.on("waiting for the build machine to run", &region))?;
    let address = crate::address::ssh_address(&running, a.ssh_interface.as_ref().map(|i| i.get_ref().as_str()));

    // --- Provision over SSH.
    ctx.phase("connect");
    let mut machine = Machine::new(address.unwrap_or_default()).pinned_host_key(host_key.public_line.clone());
    if let Some(k) = &login_key {
        machine = machine.generated_key(k.clone());
    }
    let ssh = SshCommunicator::new(ssh_config(&job.tree, image, &machine)?).with_events(ctx.events.clone());
    ssh.connect(&connect_wait(image)).await?;
    ctx.events.info(format!("connected to {} ({instance_id}, {region})", ssh.target()));
    ctx.phase("provision");
    let reboot: Arc<dyn imgbake_core::reboot::PlatformReboot> =
        Arc::new(Ec2Reboot::new(c.clone(), instance_id.clone()));
    let provisioned = job.provisioner.provision(&ssh, Some(reboot)).await;
    ssh.disconnect().await;
    provisioned?;

    // --- Capture.
    ctx.phase("capture");
    let stopping = image::stop(&c, &instance_id).await.map_err(ctx.on("stopping the build machine", &region))?;
    let stopping = (stopping != "stopped").then_some(stopping.as_str());
    waiters::instance(
        &c,
        &instance_id,
        "stopped",
        &["shutting-down", "terminated"],
        stopping,
        &ctx.wait(instance_timeout),
        &ctx.events,
    )
    .await
    .map_err(ctx.on("waiting for the build machine to stop", &region))?;
    let ami_tags = ctx.ami_tags(&source_id);
    let (ami, ami_r) = ctx
        .create(&session, "image", || {
            image::create(&c, &instance_id, &ami_name, a.ami_description.as_deref(), &ami_tags)
        })
        .await
        .map_err(|e| e.at(a.ami_name.as_ref().map(span)))
        .map_err(ctx.on("creating the AMI", &region))?;
    let image_timeout = a.image_timeout.map(|d| d.get()).unwrap_or(DEFAULT_IMAGE_TIMEOUT);
    let made = waiters::image(&c, &ami, true, &ctx.wait(image_timeout), &ctx.events)
        .await
        .map_err(ctx.on("waiting for the AMI", &region))?;
    let snaps = image::snapshots(&made);
    // The entry now names the snapshots, so a retried cleanup still finds them after the AMI is gone.
    let ami_r = replace(&job, ami_r, session.resource("image", &ami).with("snapshots", snaps.join(",")))?;

    // --- Copies and sharing, while the machine and the temporary resources go.
    let cleanup = async {
        // The machine first: the security group can only go once it is terminated.
        for r in temporaries.iter().rev() {
            ctx.remove(r).await;
        }
    };
    let finish = finish(&ctx, &session, &ami, &ami_name, &snaps, &ami_tags, image_timeout);
    let ((), finished) = tokio::join!(cleanup, finish);
    let (locations, mut extra, entries) =
        finished.map_err(ctx.on("finishing the AMI (tags, copies, sharing)", &region))?;
    for r in std::iter::once(&ami_r).chain(&entries) {
        job.release(r)?;
    }
    // `force_deregister`: the old AMIs of this name go only now that the new one is ready.
    for (c, old) in &replaced {
        let id = old.image_id().unwrap_or_default();
        match image::remove(c, id, &image::snapshots(old), &ctx.wait(b.options().cleanup_timeout)).await {
            Ok(()) => ctx.events.info(format!("deregistered the old AMI {id} named `{ami_name}` ({})", c.region())),
            Err(e) => ctx.events.warn(format!(
                "could not deregister the old AMI {id} named `{ami_name}` ({}): {}; remove it by hand",
                c.region(),
                e.chain()
            )),
        }
    }
    extra.insert("name".into(), ami_name);
    Ok(Artifact {
        image: job.image.clone(),
        builder: "aws".into(),
        id: ami,
        locations,
        fingerprint: job.fingerprint.clone(),
        source: source_id,
        parent: image.parent.as_ref().map(|p| p.get_ref().clone()),
        build_id: job.build_id.clone(),
        created,
        extra,
    })
}

/// AMIs of this account named `name` in the build region and every copy region. Without
/// `force_deregister` one is a preflight error (EC2 would refuse the name after the whole build);
/// with it, they are returned, to be deregistered once the new AMI is ready.
async fn same_name(
    ctx: &Ctx<'_>,
    session: &Session,
    name: &str,
) -> Result<Vec<(Arc<Clients>, aws_sdk_ec2::types::Image)>, BuildError> {
    let a = ctx.a;
    let mut out = Vec::new();
    let regions = std::iter::once(session.region.clone()).chain(a.copy_regions.iter().map(|r| r.get_ref().clone()));
    for region in regions {
        let c = ctx.b.clients(&session.in_region(&region)).await;
        let found = c
            .ec2
            .describe_images()
            .owners("self")
            .filters(crate::tags::attr("name", &[name]))
            .send()
            .await
            .api("DescribeImages", &region, None)
            .map_err(|e| ctx.doing("checking that the AMI name is free", e))?;
        for img in found.images() {
            if a.force_deregister != Some(true) {
                return Err(config(format!(
                    "an AMI named `{name}` already exists in {region} ({}): choose another aws.ami_name (e.g. with {{{{timestamp}}}}), or set aws.force_deregister = true to replace it once the new AMI is ready",
                    img.image_id().unwrap_or_default()
                ))
                .at(a.ami_name.as_ref().map(span)));
            }
            out.push((c.clone(), img.clone()));
        }
    }
    Ok(out)
}

/// Swap a journal entry for a more detailed one of the same resource.
fn replace(job: &BuildJob, old: Resource, new: Resource) -> Result<Resource, BuildError> {
    job.record(new.clone())?;
    job.release(&old)?;
    Ok(new)
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
    if a.copy_regions.is_empty() && a.share.is_none() && a.deprecate_after.is_none() && a.snapshot_tags.is_empty() {
        // Nothing else to do: one call tags the snapshots (with the AMI's tags) and marks both complete.
        let mut t = ami_tags.to_vec();
        t.push(complete);
        let ids: Vec<String> = std::iter::once(ami.to_string()).chain(snaps.iter().cloned()).collect();
        image::tag(&ctx.c, &ids, &t, &ctx.wait(TAG_TIMEOUT)).await?;
        return Ok((locations, extra, Vec::new()));
    }
    image::tag(&ctx.c, snaps, &ctx.snapshot_tags(ami_tags), &ctx.wait(TAG_TIMEOUT)).await?;
    if !a.copy_regions.is_empty() {
        ctx.phase("copy");
    }
    let copies = a.copy_regions.iter().map(|r| copy_to(ctx, session, r, ami, name, ami_tags, image_timeout));
    let copies = futures::future::try_join_all(copies).await?;

    let mut all: Vec<(Arc<Clients>, String, Vec<String>)> = vec![(ctx.c.clone(), ami.to_string(), snaps.to_vec())];
    let mut entries = Vec::new();
    for (c, id, s, r) in copies {
        all.push((c, id, s));
        entries.push(r);
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
    let complete = vec![complete];
    for (c, id, s) in &all {
        image::tag(c, std::slice::from_ref(id), &complete, &ctx.wait(TAG_TIMEOUT)).await?;
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
    let (id, r) = ctx.create(&dst_session, "image", || copy::start(&dst, &spec)).await.map_err(|e| e.at(span(to)))?;
    let made = waiters::image(&dst, &id, true, &ctx.wait(image_timeout), &ctx.events).await?;
    let snaps = image::snapshots(&made);
    let r = replace(ctx.job, r, dst_session.resource("image", &id).with("snapshots", snaps.join(",")))?;
    let have = crate::tags::to_map(made.tags());
    if have.get(keys::BUILD_ID).map(String::as_str) != Some(ctx.tags.build_id()) {
        image::tag(&dst, std::slice::from_ref(&id), ami_tags, &ctx.wait(TAG_TIMEOUT)).await?;
    }
    image::tag(&dst, &snaps, &ctx.snapshot_tags(ami_tags), &ctx.wait(TAG_TIMEOUT)).await?;
    Ok((dst, id, snaps, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names_are_cleaned() {
        assert_eq!(clean_name("web:v2 (x86)+1"), "web-v2 (x86)-1");
    }
}
