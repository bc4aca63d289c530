//! The bed for the EC2 builder: moto behind the delaying/faulting proxy, and the bed's sshd playing the
//! build machine. The proxy's hooks do what EC2 and cloud-init would: an imported key pair becomes an
//! authorized key, and the host key in RunInstances' user data becomes sshd's host key — so the
//! builder's pinned host key is really checked.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use imgbake_aws::{AwsBuilder, AwsOptions, ClientOptions, Environment, Polling};
use imgbake_config::{LoadOptions, Stamp, Tree};
use imgbake_core::builder::{BuildJob, BuildSource, Builder, Provision, ResolvedSource};
use imgbake_core::cleanup::Journal;
use imgbake_core::communicator::{Communicator, ExecRequest};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventLog, EventSink};
use imgbake_core::reboot::PlatformReboot;
use imgbake_moto_proxy::MotoProxy;
use imgbake_testbed::{Moto, SshTarget, Sshd};

pub const REGION: &str = "eu-west-1";
pub const COPY_REGION: &str = "us-east-1";
/// The tree id of [`Bed::tree`].
pub const TREE_ID: &str = "aws-test-0001";

pub struct Bed {
    pub moto: Moto,
    pub proxy: MotoProxy,
    pub sshd: Arc<Sshd>,
    pub dir: tempfile::TempDir,
    pub source: String,
}

impl Bed {
    pub async fn start() -> Bed {
        let moto = Moto::start().await.expect("moto server (run tests/bed/install.sh)");
        let sshd = Arc::new(Sshd::start().await.expect("sshd (run tests/bed/install.sh)"));
        let proxy = MotoProxy::start(&moto.endpoint()).await.unwrap();
        let source = moto.register_image(REGION, "debian-12-amd64-20240101", &[("os", "debian")]).await.unwrap();

        // EC2 + cloud-init, as far as the bed's sshd is concerned.
        let s = sshd.clone();
        proxy.on_call(move |call| {
            if call.action == "ImportKeyPair"
                && let Some(material) = call.param("PublicKeyMaterial")
            {
                let line = base64::engine::general_purpose::STANDARD.decode(material.trim()).unwrap();
                s.authorize_key(&String::from_utf8(line).unwrap()).unwrap();
            }
        });
        let s = sshd.clone();
        proxy.on_launch(move |launch| {
            let Some(ud) = &launch.user_data else { return };
            if let Some(key) = imgbake_aws::userdata::host_private_key_of(ud) {
                install_host_key(&s, &key);
            }
            // What enable-openssh.ps1 would do on Windows: the host key and the login key.
            if let Some((key, login)) = windows_keys_of(ud) {
                install_host_key(&s, &key);
                s.authorize_key(&login).unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        Bed { moto, proxy, sshd, dir, source }
    }

    /// A builder talking to the proxy, with the bed's dummy credentials and quick polls.
    pub fn builder(&self) -> AwsBuilder {
        let creds = aws_sdk_ec2::config::Credentials::new(
            imgbake_testbed::ACCESS_KEY_ID,
            imgbake_testbed::SECRET_ACCESS_KEY,
            None,
            None,
            "imgbake-test",
        );
        AwsBuilder::new(AwsOptions {
            client: ClientOptions {
                credentials: Some(aws_sdk_ec2::config::SharedCredentialsProvider::new(creds)),
                environment: Environment::Isolated,
                initial_backoff: Duration::from_millis(50),
                ..ClientOptions::default()
            },
            polling: Polling { initial: Duration::from_millis(100), max: Duration::from_millis(300) },
            cleanup_timeout: Duration::from_secs(60),
            intent_settle: Duration::from_secs(10),
            ..AwsOptions::default()
        })
    }

    /// Write `tree.toml`: one image `base` from the bed's source AMI, reaching the bed's sshd, plus
    /// `extra` TOML appended (more keys for `[images.base.aws]` go in `aws_extra`).
    pub fn tree(&self, aws_extra: &str, extra: &str) -> Tree {
        self.tree_at("", TREE_ID, aws_extra, extra)
    }

    /// The same tree (named `aws-test` too) in subfolder `sub` of the bed's dir, with tree id `id`.
    pub fn tree_at(&self, sub: &str, id: &str, aws_extra: &str, extra: &str) -> Tree {
        let text = format!(
            r#"[settings]
name = "aws-test"
id = "{id}"

[images.base]
builder = "aws"
source = {{ ami = "{source}" }}
tags = {{ team = "core" }}
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}

[images.base.aws]
region = "{REGION}"
endpoint = "{endpoint}"
ssh_cidrs = ["127.0.0.1/32"]
instance_timeout = "60s"
image_timeout = "60s"
{aws_extra}

{extra}
"#,
            source = self.source,
            port = self.sshd.port(),
            endpoint = self.proxy.endpoint(),
        );
        let dir = self.dir.path().join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tree.toml");
        std::fs::write(&path, text).unwrap();
        let opts = LoadOptions {
            env: Default::default(),
            schemas: imgbake_config::Schemas::new().with(imgbake_aws::AwsSchema::arc()),
            ..LoadOptions::default()
        };
        match Tree::load(&path, &opts) {
            Ok(t) => t,
            Err(d) => panic!("{d}"),
        }
    }

    /// A job for `image` of `tree`, rendered for a fresh build id, journaled under the bed's dir, its
    /// source resolved by the builder; events kept in memory.
    pub async fn job(
        &self,
        builder: &AwsBuilder,
        tree: &Tree,
        image: &str,
        steps: Arc<dyn Provision>,
    ) -> (BuildJob, EventLog) {
        let img = tree.image(image).unwrap();
        let source = builder.resolve_source(tree, img).await.unwrap_or_else(|e| panic!("{}", e.chain()));
        let (events, log) = EventSink::memory();
        (self.job_from(tree, image, steps, &source.id, events), log)
    }

    /// A job starting from AMI `source` as given (no resolving), with events going to `events`.
    pub fn job_from(
        &self,
        tree: &Tree,
        image: &str,
        steps: Arc<dyn Provision>,
        source: &str,
        events: EventSink,
    ) -> BuildJob {
        let build_id = format!("b-{}", uuid::Uuid::new_v4().simple().to_string().get(..10).unwrap());
        let tree = Arc::new(tree.rerender(&Stamp::new(&build_id, chrono::Utc::now())).unwrap());
        let source = BuildSource::Root(ResolvedSource::new(source, "test source"));
        let journal = Arc::new(Journal::create(&self.dir.path().join(".imgbake"), &build_id, image).unwrap());
        BuildJob {
            tree,
            image: image.to_string(),
            build_id,
            fingerprint: "fp-0123456789".into(),
            source,
            events: events.for_image(image),
            journal,
            provisioner: steps,
            debug: false,
            keep_on_failure: false,
            key_file: None,
        }
    }

    /// API calls that create something, as the proxy saw them.
    pub fn creating_calls(&self) -> Vec<String> {
        self.proxy
            .call_log()
            .into_iter()
            .filter(|c| ["Create", "Run", "Import", "Copy", "Authorize", "Put"].iter().any(|p| c.action.starts_with(p)))
            .map(|c| c.action)
            .collect()
    }

    /// An EC2 client straight to moto (not counted by the proxy).
    pub async fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        self.moto.ec2_client(region).await
    }

    /// Everything of a build still in moto, in both regions: running instances, key pairs, security
    /// groups, volumes, AMIs (but the source and `keep`), snapshots no kept AMI uses.
    pub async fn leftovers(&self, keep: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for region in [REGION, COPY_REGION] {
            let ec2 = self.ec2(region).await;
            let inst = ec2.describe_instances().send().await.unwrap();
            for i in inst.reservations().iter().flat_map(|r| r.instances()) {
                let state = i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default();
                if state != "terminated" {
                    out.push(format!("{region} instance {} ({state})", i.instance_id().unwrap_or_default()));
                }
            }
            for k in ec2.describe_key_pairs().send().await.unwrap().key_pairs() {
                out.push(format!("{region} key pair {}", k.key_name().unwrap_or_default()));
            }
            for g in ec2.describe_security_groups().send().await.unwrap().security_groups() {
                if g.group_name() != Some("default") {
                    out.push(format!("{region} security group {}", g.group_id().unwrap_or_default()));
                }
            }
            let mut kept_snaps = BTreeSet::new();
            for img in ec2.describe_images().owners("self").send().await.unwrap().images() {
                let id = img.image_id().unwrap_or_default();
                let snaps = imgbake_aws::image::snapshots(img);
                if id == self.source || keep.contains(&id) {
                    kept_snaps.extend(snaps);
                } else {
                    out.push(format!("{region} image {id}"));
                }
            }
            for s in ec2.describe_snapshots().owner_ids("self").send().await.unwrap().snapshots() {
                let id = s.snapshot_id().unwrap_or_default();
                if !kept_snaps.contains(id) {
                    out.push(format!("{region} snapshot {id}"));
                }
            }
            for v in ec2.describe_volumes().send().await.unwrap().volumes() {
                let state = v.state().map(|s| s.as_str().to_string()).unwrap_or_default();
                if state != "deleted" {
                    out.push(format!("{region} volume {} ({state})", v.volume_id().unwrap_or_default()));
                }
            }
        }
        out
    }

    /// Unwind the job's journal through the builder, expecting no failure.
    pub async fn unwind(&self, builder: &AwsBuilder, job: &BuildJob) {
        let failed = imgbake_core::builder::unwind(&job.journal, builder, &job.tree, &job.events).await;
        let failed: Vec<String> = failed.iter().map(|(r, e)| format!("{}: {}", r.describe(), e.chain())).collect();
        assert!(failed.is_empty(), "unwinding failed: {failed:?}");
        assert!(job.journal.pending().is_empty());
    }
}

/// What cloud-init does with `ssh_keys`: write the host key sshd presents (sshd re-reads host keys
/// for every connection).
fn install_host_key(sshd: &Sshd, private_key: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path: PathBuf = sshd.dir().join("ssh_host_ed25519_key");
    std::fs::write(&path, private_key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The host private key and the login key from Windows user data.
fn windows_keys_of(ud: &str) -> Option<(String, String)> {
    let start = ud.find("-HostPrivateKey @'\n")? + "-HostPrivateKey @'\n".len();
    let end = ud[start..].find("\n'@")? + start;
    let login = ud.split("-AuthorizedKey '").nth(1)?.split('\'').next()?.to_string();
    Some((format!("{}\n", &ud[start..end]), login))
}

/// Steps for tests: shell commands, then a file upload; optionally fail at a command.
pub struct Steps {
    pub commands: Vec<String>,
    pub upload: Option<(Vec<u8>, String)>,
    /// Calls of `provision` so far, and whether it got a platform reboot.
    pub seen: Mutex<Vec<Option<String>>>,
}

impl Steps {
    pub fn new(commands: &[&str]) -> Arc<Steps> {
        Arc::new(Steps {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            upload: None,
            seen: Mutex::new(Vec::new()),
        })
    }

    pub fn with_upload(commands: &[&str], data: &[u8], remote: &str) -> Arc<Steps> {
        Arc::new(Steps {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            upload: Some((data.to_vec(), remote.to_string())),
            seen: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Provision for Steps {
    async fn provision(
        &self,
        comm: &dyn Communicator,
        platform: Option<Arc<dyn PlatformReboot>>,
    ) -> Result<(), BuildError> {
        self.seen.lock().unwrap().push(platform.map(|p| p.describe()));
        for c in &self.commands {
            let out = comm.exec(&ExecRequest::new(c.clone()).captured(), &EventSink::discard()).await?;
            if !out.status.success() {
                return Err(BuildError::new(
                    ErrorKind::Step,
                    format!("`{c}` {}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
                ));
            }
        }
        if let Some((data, remote)) = &self.upload {
            comm.upload_bytes(data, remote, 0o644).await?;
        }
        Ok(())
    }
}

/// The tags of a moto image as a map.
pub fn image_tags(img: &aws_sdk_ec2::types::Image) -> std::collections::BTreeMap<String, String> {
    img.tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
        .collect()
}

/// Load options with the aws builder's schema (the process environment, as `LoadOptions::default()`).
pub fn aws_options() -> LoadOptions {
    LoadOptions {
        schemas: imgbake_config::Schemas::new().with(imgbake_aws::AwsSchema::arc()),
        ..LoadOptions::default()
    }
}
