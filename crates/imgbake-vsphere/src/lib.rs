//! imgbake's `vsphere` builder: a template from a template, through the vSphere API only (vCenter or
//! ESXi; no SSH to the host, no re-registering afterwards).
//!
//! ```toml
//! [defaults.vsphere]
//! url = "vcenter.example.com"          # or VSPHERE_URL / GOVC_URL
//! username = "builder@vsphere.local"   # or VSPHERE_USER / GOVC_USERNAME; the password: VSPHERE_PASSWORD
//! datacenter = "DC1"
//! cluster = "Build"
//! folder = "imgbake"
//!
//! [images.base]
//! builder = "vsphere"
//! source = { template = "templates/debian-12" }
//! communicator = { username = "debian" }
//! steps = [{ shell = { inline = ["sudo apt-get -y upgrade"] } }]
//!
//! [images.app]
//! parent = "base"                      # cloned from base's template
//! ```
//!
//! A build clones the source to a build VM, gives it the build's SSH host and login keys through
//! cloud-init's VMware datasource (`guestinfo.userdata`), provisions it like every builder, shuts
//! it down and marks it as template. The template carries its fingerprint in `extraConfig`
//! (`imgbake.fingerprint`, `imgbake.tree-id`...), so `plan`, `clean` and `prune` work from vCenter
//! alone. See docs/builders/vsphere.md.
//!
//! The parts: [`soap`] (HTTPS + SOAP, faults as values), [`vim`] (the ~15 calls), [`inventory`]
//! (login, placement, lookups), [`vm`] (a VM's lifecycle), [`guestinfo`] (the user data),
//! [`schema`]/[`settings`] (the tree file's part).
//!
//! ```
//! let mut registry = imgbake_core::registry::Registry::new();
//! registry.register(std::sync::Arc::new(imgbake_vsphere::VsphereBuilder::default()));
//! assert_eq!(registry.kinds(), vec!["vsphere"]);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
pub mod devices;
pub mod guestinfo;
pub mod inventory;
pub mod schema;
pub mod settings;
pub mod soap;
pub mod vim;
pub mod vm;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::{Artifact, tags};
use imgbake_core::builder::{Build, BuildJob, BuildSource, Builder, ResolvedSource, SweepFilter};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::wait::Wait;

pub use build::config_key;
pub use inventory::{Endpoint, Environment};
pub use schema::{NAME, VsphereSchema};
pub use settings::{VsphereSettings, VsphereSource};

use crate::inventory::platform;
use crate::vim::{MoRef, Vim, extra_config, text};

/// The artifact's location key: its inventory path.
pub const LOCATION: &str = "path";
/// The extraConfig key holding a template's inventory path when it was made.
pub const PATH_KEY: &str = "imgbake.path";

/// How the builder works, beyond what the tree says.
#[derive(Clone, Debug)]
pub struct VsphereOptions {
    /// Where credentials come from when the tree does not say.
    pub environment: Environment,
    /// One SOAP request's limit.
    pub request_timeout: Duration,
    /// How often to poll tasks, power states and addresses.
    pub poll: Wait,
}

impl Default for VsphereOptions {
    fn default() -> Self {
        VsphereOptions {
            environment: Environment::Process,
            request_timeout: Duration::from_secs(120),
            poll: Wait::new(Duration::from_secs(600)).interval(Duration::from_millis(500), Duration::from_secs(5)),
        }
    }
}

/// The `vsphere` builder.
#[derive(Default)]
pub struct VsphereBuilder {
    options: VsphereOptions,
    /// Logged-in sessions by endpoint, shared by planning, builds and cleanup of one run.
    sessions: tokio::sync::Mutex<HashMap<Endpoint, Vim>>,
}

impl std::fmt::Debug for VsphereBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsphereBuilder").field("options", &self.options).finish_non_exhaustive()
    }
}

/// The image's settings (empty when it has none: everything may come from the environment).
fn settings_of(image: &Image) -> VsphereSettings {
    settings::of(image).cloned().unwrap_or_default()
}

const DEFAULT_TASK: Duration = Duration::from_secs(30 * 60);
const DEFAULT_IP: Duration = Duration::from_secs(10 * 60);
const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5 * 60);

impl VsphereBuilder {
    /// A builder with `options`.
    pub fn new(options: VsphereOptions) -> Self {
        VsphereBuilder { options, sessions: Default::default() }
    }

    /// A logged-in session for `endpoint` (reused within the run).
    pub async fn session(&self, endpoint: &Endpoint) -> Result<Vim, BuildError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(v) = sessions.get(endpoint) {
            return Ok(v.clone());
        }
        let vim = endpoint.login(&self.options.environment, self.options.request_timeout).await?;
        sessions.insert(endpoint.clone(), vim.clone());
        Ok(vim)
    }

    fn endpoint(&self, tree: &Tree, image: &Image) -> Result<Endpoint, BuildError> {
        Endpoint::of(&settings_of(image), &self.options.environment, tree, &image.name)
    }

    /// The endpoint a journaled or swept resource was made through.
    fn endpoint_of(&self, r: &Resource) -> Result<Endpoint, BuildError> {
        let get = |k: &str| r.extra.get(k).cloned();
        Ok(Endpoint {
            url: get("url")
                .ok_or_else(|| BuildError::new(ErrorKind::Internal, format!("{} has no url", r.describe())))?,
            username: get("username").unwrap_or_default(),
            password_env: get("password_env").unwrap_or_else(|| "VSPHERE_PASSWORD".into()),
            insecure: get("insecure").is_some_and(|v| v == "true"),
            ca_file: get("ca_file").map(Into::into),
        })
    }

    /// Every imgbake VM and template of `tree` at `endpoint` in `dc`, with their extraConfig.
    async fn tree_vms(&self, tree: &Tree, endpoint: &Endpoint, dc: &str) -> Result<Vec<Found>, BuildError> {
        let Some(tree_id) = tree.id() else { return Ok(Vec::new()) };
        let vim = self.session(endpoint).await?;
        let dc_ref = vim
            .find_by_path(dc)
            .await
            .map_err(|e| platform(&format!("looking up {dc}"), e))?
            .ok_or_else(|| BuildError::new(ErrorKind::Config, format!("no datacenter {dc} at {}", endpoint.url)))?;
        let all = vim
            .all_of(&dc_ref, "VirtualMachine", &["name", "config.template", "config.extraConfig", "runtime.powerState"])
            .await
            .map_err(|e| platform(&format!("listing the VMs of {dc} at {}", endpoint.url), e))?;
        Ok(all
            .into_iter()
            .filter_map(|(vm, props)| {
                let extra = extra_config(&props);
                (extra.get(&config_key(tags::TREE_ID)).map(String::as_str) == Some(tree_id)).then(|| Found {
                    name: text(&props, "name").unwrap_or_default().to_string(),
                    template: text(&props, "config.template") == Some("true"),
                    power: text(&props, "runtime.powerState").unwrap_or_default().to_string(),
                    vm,
                    extra,
                })
            })
            .collect())
    }

    /// The (endpoint, datacenter path) pairs of these images, each once.
    async fn places(&self, tree: &Tree, images: &[&Image]) -> Result<Vec<(Endpoint, String, Vec<String>)>, BuildError> {
        let mut out: Vec<(Endpoint, String, Vec<String>)> = Vec::new();
        for image in images.iter().filter(|i| i.has_builder(NAME)) {
            let endpoint = self.endpoint(tree, image)?;
            let vim = self.session(&endpoint).await?;
            let (_, dc) = inventory::datacenter(&vim, &settings_of(image)).await?;
            match out.iter_mut().find(|(e, d, _)| *e == endpoint && *d == dc) {
                Some((_, _, names)) => names.push(image.name.clone()),
                None => out.push((endpoint, dc, vec![image.name.clone()])),
            }
        }
        Ok(out)
    }
}

/// An imgbake VM or template found in vCenter.
struct Found {
    vm: MoRef,
    name: String,
    template: bool,
    /// `poweredOn`, `poweredOff`, `suspended`.
    power: String,
    extra: BTreeMap<String, String>,
}

impl Found {
    /// A key's value; blanked keys count as absent.
    fn tag(&self, key: &str) -> Option<&str> {
        self.extra.get(&config_key(key)).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Is this VM the one its record was written on? A user's copy of a template carries the same
    /// keys under another name: it is not ours.
    fn is_recorded_one(&self) -> bool {
        match self.extra.get(PATH_KEY).filter(|p| !p.is_empty()) {
            Some(p) => p.rsplit('/').next() == Some(self.name.as_str()),
            None => true,
        }
    }

    fn path(&self) -> String {
        self.extra.get(PATH_KEY).cloned().unwrap_or_else(|| self.name.clone())
    }

    /// A machine someone cloned from one of the tree's templates, running: vSphere copies the
    /// template's extraConfig into the clone, so it carries the template's record under another
    /// name (imgbake's own build VMs and templates carry their own path).
    fn running_machine(&self, endpoint: &Endpoint) -> Option<imgbake_core::audit::RunningMachine> {
        if self.template || self.is_recorded_one() || self.power != "poweredOn" {
            return None;
        }
        let keys =
            [tags::TREE_ID, tags::TREE, tags::IMAGE, tags::BUILD_ID, tags::CREATED, tags::FINGERPRINT, tags::PARENT];
        let image_tags: BTreeMap<String, String> =
            keys.iter().filter_map(|k| self.tag(k).map(|v| (k.to_string(), v.to_string()))).collect();
        Some(imgbake_core::audit::RunningMachine {
            id: self.vm.value.clone(),
            image_id: self.path(),
            location: LOCATION.into(),
            account: Some(endpoint.url.clone()),
            state: self.power.clone(),
            launched: None,
            tags: BTreeMap::from([("Name".to_string(), self.name.clone())]),
            image_created: self.tag(tags::CREATED).and_then(|c| c.parse().ok()),
            image_tags: Some(image_tags),
        })
    }

    fn artifact(&self, endpoint: &Endpoint) -> Option<Artifact> {
        Some(Artifact {
            image: self.tag(tags::IMAGE)?.to_string(),
            builder: NAME.into(),
            id: self.path(),
            locations: BTreeMap::from([(LOCATION.to_string(), self.path())]),
            fingerprint: self.tag(tags::FINGERPRINT)?.to_string(),
            source: self.tag(tags::SOURCE).unwrap_or_default().to_string(),
            parent: None,
            build_id: self.tag(tags::BUILD_ID).unwrap_or_default().to_string(),
            created: self.tag(tags::CREATED).and_then(|c| c.parse().ok()).unwrap_or_default(),
            extra: BTreeMap::from([("moref".into(), self.vm.value.clone()), ("url".into(), endpoint.url.clone())]),
        })
    }
}

#[async_trait]
impl Builder for VsphereBuilder {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn resolve_source(&self, tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
        let src = image.source.as_ref().and_then(|s| settings::source_of(s.get_ref()));
        let Some(template) = src.and_then(|s| s.template.as_ref()) else {
            return Err(BuildError::new(ErrorKind::Config, format!("image `{}` has no source.template", image.name)));
        };
        let endpoint = self.endpoint(tree, image)?;
        let vim = self.session(&endpoint).await?;
        let (dc, dc_path) = inventory::datacenter(&vim, &settings_of(image)).await?;
        let vm = inventory::find_vm(&vim, &dc, &dc_path, template.get_ref()).await?.ok_or_else(|| {
            BuildError::new(
                ErrorKind::Config,
                format!(
                    "image `{}`: no template or VM `{}` in {dc_path} at {}",
                    image.name,
                    template.get_ref(),
                    endpoint.url
                ),
            )
            .at(imgbake_config::Span::new(template.span()))
        })?;
        let p = vim
            .properties(&vm, &["name", "config.instanceUuid", "config.changeVersion"])
            .await
            .map_err(|e| platform(&format!("reading the source {}", template.get_ref()), e))?;
        // The template's identity and version: a changed template is a changed source.
        let uuid = text(&p, "config.instanceUuid").unwrap_or(&vm.value).to_string();
        let id = match text(&p, "config.changeVersion").filter(|v| !v.is_empty()) {
            Some(v) => format!("{uuid}@{v}"),
            None => uuid,
        };
        let mut r = ResolvedSource::new(id, format!("{} ({vm}) in {dc_path}", template.get_ref()));
        r.details.insert("moref".into(), vm.value.clone());
        Ok(r)
    }

    async fn list_artifacts(&self, tree: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
        let mut out = Vec::new();
        for (endpoint, dc, names) in self.places(tree, images).await? {
            for f in self.tree_vms(tree, &endpoint, &dc).await? {
                // Only finished templates count: a VM without `complete` is a failed build's leftover.
                if !f.template || f.tag(tags::COMPLETE).is_none() || !f.is_recorded_one() {
                    continue;
                }
                if let Some(a) = f.artifact(&endpoint).filter(|a| names.contains(&a.image)) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    async fn prepare<'a>(&'a self, job: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError> {
        build::prepare(self, job).await
    }

    async fn running_machines(
        &self,
        tree: &Tree,
        images: &[&Image],
    ) -> Result<Option<Vec<imgbake_core::audit::RunningMachine>>, BuildError> {
        let mut out = Vec::new();
        for (endpoint, dc, _) in self.places(tree, images).await? {
            out.extend(self.tree_vms(tree, &endpoint, &dc).await?.iter().filter_map(|f| f.running_machine(&endpoint)));
        }
        Ok(Some(out))
    }

    async fn destroy(&self, _tree: &Tree, resource: &Resource, _events: &EventSink) -> Result<(), BuildError> {
        let endpoint = self.endpoint_of(resource)?;
        let vim = self.session(&endpoint).await?;
        let vm = match resource.extra.get("moref") {
            Some(m) => Some(MoRef::new("VirtualMachine", m)),
            None => {
                vim.find_by_path(&resource.id).await.map_err(|e| platform(&format!("looking up {}", resource.id), e))?
            }
        };
        let Some(vm) = vm else { return Ok(()) };
        // Found by path only: delete it only if this build made it (the path may be another VM's).
        if !resource.extra.contains_key("moref")
            && let Some(build_id) = resource.extra.get("build_id")
        {
            let p = vim.properties(&vm, &["config.extraConfig"]).await.map_err(|e| platform("reading the VM", e))?;
            if extra_config(&p).get(&config_key(tags::BUILD_ID)) != Some(build_id) {
                return Ok(());
            }
        }
        vm::destroy(&vim, &vm, DEFAULT_TASK)
            .await
            .map_err(|e| platform(&format!("deleting {}", resource.describe()), e))
    }

    async fn sweep(&self, tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
        let images: Vec<&Image> = tree.images().values().collect();
        let mut out = Vec::new();
        for (endpoint, dc, _) in self.places(tree, &images).await? {
            for f in self.tree_vms(tree, &endpoint, &dc).await? {
                let build_id = f.tag(tags::BUILD_ID).unwrap_or_default();
                // Complete templates are artifacts; copies of them under other names are users'.
                if (f.tag(tags::COMPLETE).is_some() && f.template)
                    || !f.is_recorded_one()
                    || filter.skips_build(build_id)
                {
                    continue;
                }
                let created: Option<chrono::DateTime<chrono::Utc>> = f.tag(tags::CREATED).and_then(|c| c.parse().ok());
                if let (Some(age), Some(c)) = (filter.older_than, created)
                    && (chrono::Utc::now() - c).to_std().unwrap_or_default() < age
                {
                    continue;
                }
                out.push(build::vm_resource(&endpoint, &f.path(), build_id).with("moref", f.vm.value.clone()));
            }
        }
        Ok(out)
    }

    async fn delete_artifact(&self, tree: &Tree, artifact: &Artifact, events: &EventSink) -> Result<(), BuildError> {
        let image = tree.image(&artifact.image).ok_or_else(|| {
            BuildError::new(ErrorKind::Config, format!("artifact {} belongs to no image of the tree", artifact.id))
        })?;
        let endpoint = self.endpoint(tree, image)?;
        let vim = self.session(&endpoint).await?;
        let vm = match artifact.extra.get("moref") {
            Some(m) => MoRef::new("VirtualMachine", m),
            None => match vim.find_by_path(&artifact.id).await.map_err(|e| platform("looking up the template", e))? {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        vm::destroy(&vim, &vm, DEFAULT_TASK).await.map_err(|e| platform(&format!("deleting {}", artifact.id), e))?;
        events.emit(EventKind::ResourceDeleted {
            kind: format!("{NAME}.template"),
            id: artifact.id.clone(),
            region: None,
        });
        Ok(())
    }
}

/// The source a build clones: the root's resolved template or the parent's.
fn source_ref(job: &BuildJob) -> Option<MoRef> {
    let id = match &job.source {
        BuildSource::Root(r) => r.details.get("moref")?,
        BuildSource::Parent(a) => a.extra.get("moref")?,
    };
    Some(MoRef::new("VirtualMachine", id))
}
