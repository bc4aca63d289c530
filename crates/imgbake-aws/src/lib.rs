//! # imgbake-aws: the EC2/EBS builder
//!
//! Source AMI → build machine → provisioning over SSH → AMI (copied, shared, tagged), with every
//! resource tagged at creation and on the build's undo journal the moment it exists, so nothing leaks
//! on any exit path. One module per step: [`source`], [`preflight`], [`keypair`], [`security_group`],
//! [`userdata`], [`launch`], [`waiters`] (polling around learned moments: [`timing`], [`schedule`]),
//! [`address`], [`image`], [`copy`], [`share`], [`tags`];
//! [`ebs_direct`] uploads a raw disk straight into a snapshot (an AMI without a build machine, read
//! first by [`disk`]);
//! [`destroy`], [`sweep`], [`artifacts`] and [`publish`] serve `imgbake clean`, `plan` and `publish`;
//! [`channel`] keeps release channels (`imgbake promote`); [`audit`] lists running instances for
//! `imgbake audit`.
//!
//! ```no_run
//! use imgbake_aws::{AwsBuilder, AwsOptions};
//! use imgbake_core::builder::Builder;
//! # async fn demo(tree: &imgbake_config::Tree) -> Result<(), imgbake_core::error::BuildError> {
//! let aws = AwsBuilder::new(AwsOptions::default());
//! let images: Vec<_> = tree.images().values().collect();
//! for artifact in aws.list_artifacts(tree, &images).await? {
//!     println!("{} {} ({})", artifact.image, artifact.id, artifact.fingerprint);
//! }
//! # Ok(()) }
//! ```

pub mod address;
pub mod artifacts;
pub mod audit;
mod build;
pub mod channel;
pub mod clients;
pub mod copy;
pub mod destroy;
pub mod disk;
pub mod ebs_direct;
pub mod error;
pub mod image;
pub mod keypair;
pub mod launch;
pub mod lease;
pub mod preflight;
pub mod public_ip;
pub mod publish;
pub mod rate;
pub mod reboot;
pub mod schedule;
pub mod security_group;
pub mod settings;
pub mod share;
pub mod source;
pub mod sweep;
pub mod tags;
pub mod timing;
pub mod userdata;
pub mod validate;
pub mod waiters;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use imgbake_config::{Image, Spanned, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{Build, BuildJob, Builder, ResolvedSource, SweepFilter};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::BuildError;
use imgbake_core::event::EventSink;

pub use clients::{ClientCache, ClientOptions, Clients, Environment, Session};
pub use settings::{AmiFilter, AwsSettings, AwsSource, BlockDevice, Share};
pub use tags::COMPLETE;
pub use timing::WaitHistory;
pub use validate::AwsSchema;
pub use waiters::Polling;

/// How the builder works, beyond what the tree says.
#[derive(Clone, Debug)]
pub struct AwsOptions {
    /// Credentials, environment, retries, HTTP client.
    pub client: ClientOptions,
    /// How waits poll without history (and the cap on every pause).
    pub polling: Polling,
    /// Where the durations of EC2 state changes are learned and kept, so waits poll around the
    /// moment a change is due. Default: `<state_dir>/aws-waits.json` of the tree.
    pub wait_history: WaitHistory,
    /// The "what is my IP" service for the default SSH source CIDR.
    pub public_ip_url: String,
    /// Where Windows older than Server 2019 gets Win32-OpenSSH (`None`: the script's default release).
    pub windows_openssh_url: Option<String>,
    /// How long removing one resource may take (terminating an instance, a security group still in
    /// use). Default 15 minutes.
    pub cleanup_timeout: Duration,
    /// How long removing an interrupted create (an intent entry) keeps looking for what the call may
    /// have made before concluding it made nothing: EC2 lists a new resource only some time after
    /// it exists. Default 30 s.
    pub intent_settle: Duration,
    /// `MaxResults` of each DescribeInstances page of `imgbake audit` (5 to 1000). Default 1000.
    pub audit_page_size: i32,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            client: ClientOptions::default(),
            polling: Polling::default(),
            wait_history: WaitHistory::default(),
            public_ip_url: public_ip::DEFAULT_URL.to_string(),
            windows_openssh_url: None,
            cleanup_timeout: Duration::from_secs(15 * 60),
            intent_settle: Duration::from_secs(30),
            audit_page_size: 1000,
        }
    }
}

/// (profile, endpoint, role): what decides which regions exist.
type AccountSetup = (Option<String>, Option<String>, Option<String>);

/// The `aws` builder.
#[derive(Debug)]
pub struct AwsBuilder {
    clients: ClientCache,
    options: AwsOptions,
    /// Known regions per account setup, asked once.
    regions: tokio::sync::Mutex<HashMap<AccountSetup, Vec<String>>>,
    /// What waits learned about durations.
    timing: timing::Timing,
}

impl AwsBuilder {
    /// A builder with these options.
    pub fn new(options: AwsOptions) -> Self {
        AwsBuilder {
            clients: ClientCache::new(options.client.clone()),
            options,
            regions: tokio::sync::Mutex::new(HashMap::new()),
            timing: timing::Timing::default(),
        }
    }

    /// What waits learned about durations.
    pub fn timing(&self) -> &timing::Timing {
        &self.timing
    }

    /// The wait history file for `tree` (`None`: learning is off, by option or `aws.learn_waits`).
    pub fn history_file(&self, tree: &Tree, learn: bool) -> Option<std::path::PathBuf> {
        match (&self.options.wait_history, learn) {
            (_, false) | (WaitHistory::Off, _) => None,
            (WaitHistory::File(p), true) => Some(p.clone()),
            (WaitHistory::StateDir, true) => Some(tree.state_dir().join(timing::FILE_NAME)),
        }
    }

    /// The options.
    pub fn options(&self) -> &AwsOptions {
        &self.options
    }

    /// The clients of a session (made on first use, then shared).
    pub async fn clients(&self, session: &Session) -> std::sync::Arc<Clients> {
        self.clients.get(session).await
    }

    /// Check that the build region and every copy region exist (DescribeRegions, once per account
    /// setup), pointing at the value that names a wrong one.
    pub async fn check_regions(
        &self,
        c: &Clients,
        a: &AwsSettings,
        region: &Spanned<String>,
    ) -> Result<(), BuildError> {
        let key = (c.session.profile.clone(), c.session.endpoint.clone(), c.session.role.clone());
        let mut cache = self.regions.lock().await;
        if !cache.contains_key(&key) {
            let at = imgbake_config::Span::new(region.span());
            let known = match preflight::known_regions(c).await {
                Ok(k) => k,
                Err(e) if e.is_unreachable() => {
                    return Err(error::config(preflight::unreachable(c, &e))
                        .at(a.endpoint.as_ref().map(|e| imgbake_config::Span::new(e.span()))));
                }
                // A region that does not exist has no endpoint to answer: ask one that does, to tell
                // "no such region" from "no network".
                Err(e) if c.region() != "us-east-1" => {
                    let other = self.clients.get(&c.session.in_region("us-east-1")).await;
                    match preflight::known_regions(&other).await {
                        Ok(k) => k,
                        Err(_) => return Err(BuildError::from(e).at(at)),
                    }
                }
                Err(e) => return Err(BuildError::from(e).at(at)),
            };
            cache.insert(key.clone(), known);
        }
        let known = cache.get(&key).map(Vec::as_slice).unwrap_or_default();
        preflight::check_region(known, region.get_ref(), imgbake_config::Span::new(region.span()), "aws.region")?;
        for r in &a.copy_regions {
            preflight::check_region(known, r.get_ref(), imgbake_config::Span::new(r.span()), "aws.copy_regions")?;
        }
        Ok(())
    }
}

/// The image's `aws` settings.
pub fn settings(image: &Image) -> Result<&AwsSettings, BuildError> {
    settings::of(image).ok_or_else(|| {
        error::config(format!("image `{}` builds with aws but has no [aws] settings", image.name)).at(image.span)
    })
}

/// The tree's id (`settings.id`), which scopes everything the builder finds again. Validation
/// requires it for trees with an aws image; this catches library users that skipped validation.
pub fn tree_id(tree: &Tree) -> Result<String, BuildError> {
    tree.id().map(str::to_string).ok_or_else(|| {
        error::config(format!(
            "tree `{}` has no settings.id: aws images need a unique tree id (add `id = \"{}\"` under [settings])",
            tree.name(),
            uuid::Uuid::new_v4()
        ))
    })
}

/// The image's build region.
pub fn region(image: &Image) -> Result<&Spanned<String>, BuildError> {
    settings(image)?
        .region
        .as_ref()
        .ok_or_else(|| error::config(format!("image `{}` has no aws.region", image.name)).at(image.span))
}

#[async_trait]
impl Builder for AwsBuilder {
    fn kind(&self) -> &'static str {
        "aws"
    }

    async fn resolve_source(&self, _tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
        let a = settings(image)?;
        let region = region(image)?;
        let c = self.clients.get(&Session::of(a, region.get_ref())).await;
        c.check_credentials().await?;
        self.check_regions(&c, a, region).await?;
        let (resolved, ami) = source::resolve(&c, image).await?;
        // What the build needs of the AMI travels with the resolved source, on the build job.
        Ok(source::with_details(resolved, &ami))
    }

    async fn list_artifacts(&self, tree: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
        artifacts::list(&self.clients, tree, images, Some(&self.timing)).await
    }

    async fn prepare<'a>(&'a self, job: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError> {
        if settings(job.image()?)?.import().is_some() {
            return Ok(Box::new(build::prepare_import(self, job).await?));
        }
        Ok(Box::new(build::prepare(self, job).await?))
    }

    async fn lease_store(
        &self,
        tree: &Tree,
        image: &Image,
    ) -> Result<Option<std::sync::Arc<dyn imgbake_core::lease::LeaseStore>>, BuildError> {
        let c = self.clients.get(&Session::of(settings(image)?, region(image)?.get_ref())).await;
        Ok(Some(std::sync::Arc::new(lease::SsmLease::new(c, &tree_id(tree)?, &image.name))))
    }

    async fn destroy(&self, tree: &Tree, resource: &Resource, events: &EventSink) -> Result<(), BuildError> {
        destroy::destroy(self, Some(tree), resource, events).await
    }

    async fn sweep(&self, tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
        sweep::sweep(&self.clients, tree, filter).await
    }

    async fn delete_artifact(&self, tree: &Tree, artifact: &Artifact, events: &EventSink) -> Result<(), BuildError> {
        artifacts::delete(self, tree, artifact, events).await
    }

    async fn publish(
        &self,
        _tree: &Tree,
        image: &Image,
        artifact: &Artifact,
        _events: &EventSink,
    ) -> Result<Vec<String>, BuildError> {
        publish::publish(&self.clients, image, artifact).await
    }

    async fn published(&self, _tree: &Tree, image: &Image) -> Result<Vec<String>, BuildError> {
        publish::published(&self.clients, image).await
    }

    async fn is_published(&self, _tree: &Tree, image: &Image, artifact: &Artifact) -> Result<Option<bool>, BuildError> {
        publish::is_published(&self.clients, image, artifact).await
    }

    async fn channel(
        &self,
        _tree: &Tree,
        image: &Image,
        channel: &str,
    ) -> Result<Option<imgbake_core::channel::ChannelState>, BuildError> {
        channel::state(&self.clients, image, channel).await.map(Some)
    }

    async fn point(
        &self,
        tree: &Tree,
        image: &Image,
        channel: &str,
        artifact: &Artifact,
        record: &imgbake_core::channel::PointRecord,
        _events: &EventSink,
    ) -> Result<Vec<String>, BuildError> {
        channel::point(&self.clients, tree, image, channel, artifact, record).await
    }

    async fn running_machines(
        &self,
        _tree: &Tree,
        images: &[&Image],
    ) -> Result<Option<Vec<imgbake_core::audit::RunningMachine>>, BuildError> {
        audit::running_machines(&self.clients, images, self.options.audit_page_size).await.map(Some)
    }

    async fn label(&self, tree: &Tree, artifact: &Artifact, key: &str, value: &str) -> Result<(), BuildError> {
        channel::label(&self.clients, tree, artifact, key, value).await
    }
}
