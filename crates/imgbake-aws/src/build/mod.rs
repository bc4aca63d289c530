//! One AWS build, phase by phase (core drives them, see [`imgbake_core::builder`]):
//!
//! - `prepare` ([`prepare`]): check everything that can be checked before anything exists (credentials,
//!   regions, the source AMI, the network, the AMI name), make the build's host key, login key and
//!   user data;
//! - `launch` ([`launch`]): key pair → security group → the machine, until it runs;
//! - `connect`: SSH, pinned to the build's host key; core provisions and sanitizes
//!   ([`crate::userdata::sanitize_items`]);
//! - `shutdown`: stop the machine; `capture` ([`capture`]): the AMI, until it is available;
//! - `distribute` ([`capture`]): copies and sharing while the machine and the temporary resources are
//!   removed, then the completion tag.
//!
//! An AMI made from the parent's disk file (`aws.import`) has no machine: [`import`] prepares,
//! uploads and registers it, and distributes it the same way.
//!
//! Every resource goes on the journal the moment it exists (an intent entry just before the create
//! call, see [`crate::destroy`]); the build removes its temporary resources itself once the image is
//! made, and releases the AMIs from the journal only when everything succeeded. On any failure the
//! scheduler's unwinding removes what is left.

mod capture;
mod import;
mod launch;
mod prepare;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::Tag;
use chrono::{DateTime, Utc};
use imgbake_config::{Image, Span};

use crate::settings::AwsSettings;
use imgbake_core::artifact::{Artifact, tags as keys};
use imgbake_core::builder::{Build, BuildJob, BuildSource};
use imgbake_core::cleanup::Resource;
use imgbake_core::communicator::Communicator;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::EventSink;
use imgbake_core::reboot::PlatformReboot;
use imgbake_core::sanitize::SanitizeItems;
use imgbake_ssh::SshCommunicator;
use imgbake_ssh::spec::{Machine, ssh_config};

use crate::AwsBuilder;
use crate::clients::{Clients, Session};
use crate::destroy::intent;
use crate::error::ApiError;
use crate::preflight::Network;
use crate::reboot::Ec2Reboot;
use crate::tags::{BuildTags, role};
use crate::timing::{Change, Key};
use crate::userdata::HostKey;
use crate::waiters::{Polling, Watch};
use tokio::time::Instant;

pub(crate) use import::prepare as prepare_import;
pub(crate) use prepare::prepare;

const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";
const DEFAULT_INSTANCE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The longest any wait of a build may be (`instance_timeout = "300000y"` must not overflow).
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long tagging waits for a just-created resource to be listed.
const TAG_TIMEOUT: Duration = Duration::from_secs(120);

/// What every phase of one build uses.
pub(crate) struct Ctx<'a> {
    b: &'a AwsBuilder,
    job: &'a BuildJob,
    image: &'a Image,
    a: &'a AwsSettings,
    c: Arc<Clients>,
    events: EventSink,
    tags: BuildTags,
    /// The disks' total size (GiB), when known: images of bigger disks take longer.
    disk_gib: Option<u32>,
}

impl<'a> Ctx<'a> {
    /// The context of a build of `job` in its image's region, starting now; with its session and the
    /// build's creation time.
    async fn start(b: &'a AwsBuilder, job: &'a BuildJob) -> Result<(Ctx<'a>, Session, DateTime<Utc>), BuildError> {
        use chrono::SubsecRound;
        let image = job.image()?;
        let a = crate::settings(image)?;
        let session = Session::of(a, crate::region(image)?.get_ref());
        let c = b.clients(&session).await;
        // Milliseconds: the `imgbake:created` tag keeps no more, and the artifact found again by its
        // tags must equal the one returned here. Whole seconds let two builds in one second tie, and
        // prune then took the older one for the newest.
        let created = Utc::now().trunc_subsecs(3);
        let tree_id = crate::tree_id(&job.tree)?;
        let ctx = Ctx {
            b,
            job,
            image,
            a,
            c,
            events: job.events.clone(),
            tags: BuildTags::new(&job.build_id, &job.image, &job.tree.name(), &tree_id, created),
            disk_gib: crate::source::disk_gib(a, &job.source),
        };
        Ok((ctx, session, created))
    }
}

impl Ctx<'_> {
    /// Run `create` under an intent entry; journal what it made (with `extra` details). Returns the id
    /// and its entry.
    async fn create<F, Fut>(
        &self,
        session: &Session,
        kind: &str,
        extra: &[(&str, String)],
        create: F,
    ) -> Result<(String, Resource), BuildError>
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
        let made = extra.iter().fold(session.resource(kind, &id), |r, (k, v)| r.with(k, v.as_str()));
        self.job.record(made.clone())?;
        self.job.release(&pending)?;
        Ok((id, made))
    }

    /// Remove `r` now (the build is past needing it) and take it off the journal; a failure is left to
    /// the unwinding and only warned about.
    async fn remove(&self, r: &Resource) {
        let removed = imgbake_core::builder::remove(self.b, &self.job.tree, Some(&self.job.journal), r, &self.events);
        if let Err(e) = removed.await {
            self.events.warn(format!("could not remove {} yet (cleanup retries): {}", r.describe(), e.chain()))
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

    /// The builder's polling with `aws.poll_interval` as the cap.
    fn polling(&self) -> Polling {
        let mut polling = self.b.options().polling;
        if let Some(p) = &self.a.poll_interval {
            polling.max = p.get_ref().get().max(polling.initial);
        }
        polling
    }

    fn wait(&self, timeout: Duration) -> imgbake_core::wait::Wait {
        // A deadline beyond what the clock can hold would panic; no wait needs more than a week.
        self.polling().wait(timeout.min(MAX_WAIT))
    }

    /// The build machine's instance type.
    fn instance_type(&self) -> String {
        self.a.instance_type.as_ref().map(|t| t.get_ref().clone()).unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into())
    }

    /// The history file, unless learning is off (`aws.learn_waits = false` or the builder's option).
    fn history_file(&self) -> Option<std::path::PathBuf> {
        self.b.history_file(&self.job.tree, self.a.learn_waits.unwrap_or(true))
    }

    /// A wait's link to the learned durations of `change` in `region`, started just before `started`.
    fn watch(&self, region: &str, change: Change, started: Instant) -> Watch<'_> {
        Watch {
            timing: self.b.timing(),
            file: self.history_file(),
            key: Key::new(region, &self.instance_type(), change, self.disk_gib),
            started,
            polling: self.polling(),
        }
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

    /// The `imgbake:waits` tag for the AMI in `region`: the durations learned there, so a runner
    /// without local history learns them from the artifact.
    fn waits_tag(&self, region: &str) -> Option<Tag> {
        let file = self.history_file()?;
        let value = self.b.timing().tag_for(&file, region, &self.instance_type(), self.disk_gib)?;
        Some(Tag::builder().key(crate::timing::TAG).value(value).build())
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

/// One AWS build in progress: what `prepare` found and made, then what each phase adds.
pub(crate) struct AwsBuild<'a> {
    ctx: Ctx<'a>,
    session: Session,
    region: String,
    /// When the build started (milliseconds, see [`prepare`]).
    created: DateTime<Utc>,
    source_id: String,
    /// The source AMI's EBS device names (they get encrypted with `aws.encrypt`).
    source_ebs_devices: Vec<String>,
    net: Network,
    cidrs: Vec<String>,
    ssh_port: u16,
    ami_name: String,
    /// AMIs of the same name, deregistered once the new one is ready (`force_deregister`).
    replaced: Vec<(Arc<Clients>, aws_sdk_ec2::types::Image)>,
    host_key: HostKey,
    /// The generated login key (`None`: the user's `communicator.private_key_file`).
    login_key: Option<Arc<imgbake_ssh::PrivateKey>>,
    login_public: String,
    user_data: String,
    /// The key pair, security group and machine, removed once the AMI is made.
    temporaries: Vec<Resource>,
    instance_id: String,
    instance_timeout: Duration,
    address: Option<String>,
    captured: Option<capture::Captured>,
}

#[async_trait]
impl Build for AwsBuild<'_> {
    async fn launch(&mut self) -> Result<(), BuildError> {
        launch::launch(self).await
    }

    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
        let (ctx, image) = (&self.ctx, self.ctx.image);
        let mut machine =
            Machine::new(self.address.clone().unwrap_or_default()).pinned_host_key(self.host_key.public_line.clone());
        if let Some(k) = &self.login_key {
            machine = machine.generated_key(k.clone());
        }
        let ssh = SshCommunicator::new(ssh_config(&ctx.job.tree, image, &machine)?).with_events(ctx.events.clone());
        ssh.connect(&imgbake_ssh::spec::connect_wait(image)).await?;
        ctx.events.info(format!("connected to {} ({}, {})", ssh.target(), self.instance_id, self.region));
        Ok(Box::new(ssh))
    }

    fn platform_reboot(&self) -> Option<Arc<dyn PlatformReboot>> {
        Some(Arc::new(Ec2Reboot::new(self.ctx.c.clone(), self.instance_id.clone())))
    }

    fn sanitize_items(&self) -> SanitizeItems {
        crate::userdata::sanitize_items(&self.host_key, &self.login_public)
    }

    async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError> {
        comm.disconnect().await;
        capture::stop(self).await
    }

    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        capture::capture(self).await
    }

    async fn distribute(&mut self, artifact: Artifact) -> Result<Artifact, BuildError> {
        capture::distribute(self, artifact).await
    }
}

fn span<T>(v: &imgbake_config::Spanned<T>) -> Span {
    Span::new(v.span())
}

/// AMI names allow letters, digits, spaces and `( ) [ ] . / - ' @ _`.
fn clean_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c) { c } else { '-' }).collect()
}

/// Swap a journal entry for a more detailed one of the same resource.
fn replace(job: &BuildJob, old: Resource, new: Resource) -> Result<Resource, BuildError> {
    job.record(new.clone())?;
    job.release(&old)?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names_are_cleaned() {
        assert_eq!(clean_name("web:v2 (x86)+1"), "web-v2 (x86)-1");
    }
}
