//! One vSphere build, phase by phase (core drives the order):
//!
//! 1. **prepare** — log in, resolve the placement and the source (the root's template, or the
//!    parent's template), generate the build's host and login keys.
//! 2. **launch** — journal the build VM by its inventory path, clone the source to it (powered off,
//!    linked when asked), reconfigure it (hardware, notes, the guestinfo user data, the imgbake
//!    keys in extraConfig), power it on.
//! 3. **connect** — the address from `communicator.host`, or from VMware Tools (`guest.ipAddress`,
//!    waiting `ip_timeout`); SSH pinning the build's host key.
//! 4. **shutdown** — guest shutdown through VMware Tools, powered off after `shutdown_timeout`.
//! 5. **capture** — blank the guestinfo keys, record the fingerprint and `complete` in extraConfig,
//!    then mark the VM as template (`output = "template"`), or clone it to a template and delete the
//!    VM (`output = "clone"`). The template leaves the journal: it is the artifact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use imgbake_core::artifact::{Artifact, tags};
use imgbake_core::builder::{Build, BuildJob, BuildSource};
use imgbake_core::cleanup::Resource;
use imgbake_core::communicator::Communicator;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::sanitize::SanitizeItems;
use imgbake_core::wait::Wait;
use imgbake_ssh::spec::{Machine, connect_wait, ssh_config};
use imgbake_ssh::{PrivateKey, SshCommunicator};

use crate::guestinfo::{self, BuildKeys};
use crate::inventory::{Endpoint, Place, platform};
use crate::settings::VsphereSettings;
use crate::vim::{MoRef, Vim, option_value};
use crate::vm;

/// What a build needs from the builder's options.
pub(crate) struct Limits {
    pub task: Duration,
    pub ip: Duration,
    pub shutdown: Duration,
    pub poll: Wait,
}

/// The per-build state.
pub(crate) struct VsphereBuild<'a> {
    pub(crate) job: &'a BuildJob,
    pub(crate) settings: VsphereSettings,
    pub(crate) endpoint: Endpoint,
    pub(crate) vim: Vim,
    pub(crate) place: Place,
    pub(crate) source: MoRef,
    pub(crate) source_id: String,
    pub(crate) name: String,
    pub(crate) limits: Limits,
    pub(crate) keys: BuildKeys,
    pub(crate) login_key: Arc<PrivateKey>,
    /// The build VM once cloned, with its journal entry.
    pub(crate) vm: Option<(MoRef, Resource)>,
}

/// extraConfig keys cannot hold `:`; imgbake's tag keys become `imgbake.build-id` and so on.
pub fn config_key(tag: &str) -> String {
    tag.replace(':', ".")
}

/// The journal entry of a VM at `path`, with what `destroy` needs to reach it again (never a
/// password: that stays in the environment).
pub(crate) fn vm_resource(endpoint: &Endpoint, path: &str, build_id: &str) -> Resource {
    let mut r = Resource::new(crate::NAME, "vm", path)
        .with("build_id", build_id)
        .with("url", endpoint.url.clone())
        .with("username", endpoint.username.clone())
        .with("password_env", endpoint.password_env.clone());
    if endpoint.insecure {
        r = r.with("insecure", "true");
    }
    if let Some(ca) = &endpoint.ca_file {
        r = r.with("ca_file", ca.display().to_string());
    }
    r
}

impl VsphereBuild<'_> {
    fn error(&self, doing: &str) -> impl Fn(crate::soap::SoapError) -> BuildError + '_ {
        let doing = format!("image `{}`: {doing}", self.job.image);
        move |e| platform(&doing, e)
    }

    fn vm(&self) -> Result<&MoRef, BuildError> {
        self.vm.as_ref().map(|(m, _)| m).ok_or_else(|| BuildError::new(ErrorKind::Internal, "no build VM yet"))
    }

    fn tag_entries(&self, role: &str) -> String {
        let job = self.job;
        let mut t = vec![
            (tags::BUILD_ID, job.build_id.clone()),
            (tags::IMAGE, job.image.clone()),
            (tags::TREE, job.tree.name()),
            (tags::ROLE, role.to_string()),
            (tags::SOURCE, self.source_id.clone()),
            (tags::CREATED, Utc::now().to_rfc3339()),
        ];
        if let Some(id) = job.tree.id() {
            t.push((tags::TREE_ID, id.to_string()));
        }
        if let BuildSource::Parent(p) = &job.source {
            t.push((tags::PARENT, p.id.clone()));
        }
        t.iter().map(|(k, v)| option_value(&config_key(k), v)).collect()
    }

    /// The keys that make a VM at `path` this build's artifact (`complete` last: it is what planning
    /// trusts).
    fn artifact_entries(&self, path: &str) -> String {
        let mut extra = self.tag_entries("artifact");
        extra.push_str(&option_value(crate::PATH_KEY, path));
        extra.push_str(&option_value(&config_key(tags::FINGERPRINT), &self.job.fingerprint));
        extra.push_str(&option_value(&config_key(tags::COMPLETE), "true"));
        extra
    }

    fn memory_mb(&self) -> Option<u64> {
        self.settings.memory.as_ref().map(|m| m.get_ref().bytes() / (1024 * 1024))
    }
}

#[async_trait]
impl Build for VsphereBuild<'_> {
    async fn launch(&mut self) -> Result<(), BuildError> {
        let path = format!("{}/{}", self.place.folder.1, self.name);
        // Never clone onto a taken name: cleanup could then take the other VM for this build's.
        if let Some(other) = self.vim.find_by_path(&path).await.map_err(self.error("looking up the build VM's path"))? {
            return Err(BuildError::new(
                ErrorKind::Config,
                format!(
                    "image `{}`: {path} exists already ({other}); template_name must differ per build (include {{{{ build.id }}}} or a timestamp)",
                    self.job.image
                ),
            ));
        }
        // Journaled before it exists: an interrupted clone still leaves an entry `clean` can act on,
        // and the clone carries this build's keys from its first moment, so a sweep finds it too.
        let resource = vm_resource(&self.endpoint, &path, &self.job.build_id);
        self.job.record(resource.clone())?;
        let linked = self.settings.linked_clone.unwrap_or(false);
        let snapshot = if linked { Some(self.snapshot().await?) } else { None };
        self.job.events.info(format!("cloning {} to {path}", self.source));
        let tagged = self.tag_entries("build-vm");
        let vm =
            vm::clone(&self.vim, &self.source, &self.place, &self.name, snapshot.as_ref(), &tagged, self.limits.task)
                .await
                .map_err(self.error("cloning the source"))?;
        self.vm = Some((vm.clone(), resource));
        let hostname = self.job.image.replace('_', "-");
        // A clone may carry its source's extraConfig (vCenter copies it): the parent's artifact
        // record must not make this build VM look like a finished template.
        let extra = format!(
            "{}{}{}",
            guestinfo::config_entries(&self.keys, &format!("imgbake-{}", self.job.build_id), &hostname),
            tagged,
            [config_key(tags::COMPLETE), config_key(tags::FINGERPRINT), crate::PATH_KEY.to_string()]
                .iter()
                .map(|k| option_value(k, ""))
                .collect::<String>()
        );
        let devices = self.device_changes(&vm).await?;
        let spec =
            vm::config_spec(self.settings.notes.as_deref(), self.settings.cpus, self.memory_mb(), &devices, &extra);
        vm::reconfigure(&self.vim, &vm, &spec, "configuring the build VM", self.limits.task)
            .await
            .map_err(self.error("configuring the build VM"))?;
        vm::power_on(&self.vim, &vm, self.limits.task).await.map_err(self.error("powering on the build VM"))?;
        self.job.events.info(format!("{path} ({vm}) is powered on"));
        Ok(())
    }

    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
        let image = self.job.image()?;
        let address = match &image.communicator.host {
            Some(h) => h.clone(),
            None => {
                let w = Wait { timeout: self.limits.ip, ..self.limits.poll.clone() };
                vm::wait_ip(&self.vim, self.vm()?, &w).await.map_err(|e| {
                    BuildError::new(
                        ErrorKind::Timeout,
                        format!(
                            "image `{}`: {e}; the template needs VMware Tools (open-vm-tools) to report an address, or set communicator.host",
                            self.job.image
                        ),
                    )
                })?
            }
        };
        let machine =
            Machine::new(address).generated_key(self.login_key.clone()).pinned_host_key(self.keys.host_public.clone());
        let ssh =
            SshCommunicator::new(ssh_config(&self.job.tree, image, &machine)?).with_events(self.job.events.clone());
        ssh.connect(&connect_wait(image)).await?;
        Ok(Box::new(ssh))
    }

    fn sanitize_items(&self) -> SanitizeItems {
        guestinfo::sanitize_items(&self.keys)
    }

    async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError> {
        comm.disconnect().await;
        let vm = self.vm()?.clone();
        let clean = vm::shut_down(&self.vim, &vm, self.limits.shutdown, &self.limits.poll)
            .await
            .map_err(self.error("shutting the build VM down"))?;
        if !clean {
            self.job.events.warn(format!(
                "{vm} did not shut down within {:?} (no VMware Tools?): powered off",
                self.limits.shutdown
            ));
        }
        Ok(())
    }

    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        let (vm, resource) = self.vm.clone().ok_or_else(|| BuildError::new(ErrorKind::Internal, "no build VM"))?;
        let clone = self.settings.output.as_ref().is_some_and(|o| o.get_ref() == "clone");
        let mut extra = guestinfo::cleared_entries();
        if !clone {
            extra.push_str(&self.artifact_entries(&resource.id));
        }
        let spec = vm::config_spec(None, None, None, "", &extra);
        vm::reconfigure(&self.vim, &vm, &spec, "recording the artifact", self.limits.task)
            .await
            .map_err(self.error("recording the fingerprint on the VM"))?;
        let (template, path) = if clone {
            // The build VM stays journaled: core removes it once the build ends.
            self.clone_to_template(&vm).await?
        } else {
            self.vim.mark_as_template(&vm).await.map_err(self.error("marking the VM as template"))?;
            self.job.release(&resource)?;
            self.vm = None;
            (vm.clone(), resource.id.clone())
        };
        self.job.events.info(format!("template {path} ({template})"));
        Ok(self.artifact(&template, &path))
    }

    async fn failed(&mut self, _error: &BuildError) {
        let Ok(vm) = self.vm().cloned() else { return };
        if self.job.keep_on_failure {
            self.job.events.warn(format!("keeping the build VM {vm} for inspection (it stays journaled)"));
            return;
        }
        if let Err(e) = vm::power_off(&self.vim, &vm, self.limits.task).await {
            self.job.events.warn(format!("could not power off {vm}: {e}"));
        }
    }
}

impl VsphereBuild<'_> {
    /// `deviceChange` entries for disk_size, disks and network (none: no read).
    async fn device_changes(&self, vm: &MoRef) -> Result<String, BuildError> {
        let s = &self.settings;
        let mut changes = crate::devices::Changes {
            disk_size: s.disk_size.as_ref().map(|d| d.get_ref().bytes()),
            add_disks: s.disks.iter().map(|d| (d.size.get_ref().bytes(), d.thin.unwrap_or(false))).collect(),
            network: None,
        };
        if let (Some(net), Some(name)) = (&self.place.network, &s.network) {
            let dvs = if net.kind == "DistributedVirtualPortgroup" {
                let p = self
                    .vim
                    .properties(net, &["key", "config.distributedVirtualSwitch"])
                    .await
                    .map_err(self.error("reading the port group"))?;
                let switch = p.get("config.distributedVirtualSwitch").and_then(MoRef::of);
                let uuid = match switch {
                    Some(sw) => self.vim.properties(&sw, &["uuid"]).await.map_err(self.error("reading the switch"))?,
                    None => Default::default(),
                };
                Some((
                    crate::vim::text(&uuid, "uuid").unwrap_or_default().to_string(),
                    crate::vim::text(&p, "key").unwrap_or_default().to_string(),
                ))
            } else {
                None
            };
            let short = name.get_ref().rsplit('/').next().unwrap_or_default().to_string();
            changes.network = Some((net.clone(), short, dvs));
        }
        if changes.disk_size.is_none() && changes.add_disks.is_empty() && changes.network.is_none() {
            return Ok(String::new());
        }
        let p = self
            .vim
            .properties(vm, &["config.hardware.device"])
            .await
            .map_err(self.error("reading the VM's devices"))?;
        let devices = p.get("config.hardware.device").cloned().unwrap_or_default();
        crate::devices::device_changes(&devices, &changes)
            .map_err(|e| BuildError::new(ErrorKind::Config, format!("image `{}`: {e}", self.job.image)))
    }

    async fn snapshot(&self) -> Result<MoRef, BuildError> {
        let p = self
            .vim
            .properties(&self.source, &["snapshot.currentSnapshot", "snapshot.rootSnapshotList"])
            .await
            .map_err(self.error("reading the source's snapshots"))?;
        let wanted = self.job.image()?.source.as_ref().and_then(|s| crate::settings::source_of(s.get_ref()));
        let wanted = wanted.and_then(|s| s.snapshot.as_ref()).map(|s| s.get_ref().clone());
        let found = match &wanted {
            None => p.get("snapshot.currentSnapshot").and_then(MoRef::of),
            Some(name) => p.get("snapshot.rootSnapshotList").and_then(|l| find_snapshot(l, name)),
        };
        found.ok_or_else(|| {
            BuildError::new(
                ErrorKind::Config,
                match wanted {
                    Some(n) => format!("image `{}`: the source has no snapshot named `{n}`", self.job.image),
                    None => format!(
                        "image `{}`: linked_clone needs a snapshot of the source, and it has none",
                        self.job.image
                    ),
                },
            )
        })
    }

    /// `output = "clone"`: a template cloned from the VM; the VM is deleted afterwards.
    async fn clone_to_template(&mut self, vm: &MoRef) -> Result<(MoRef, String), BuildError> {
        let name = format!("{}-t", self.name);
        let path = format!("{}/{name}", self.place.folder.1);
        let resource = vm_resource(&self.endpoint, &path, &self.job.build_id);
        self.job.record(resource.clone())?;
        let tagged = self.tag_entries("build-vm");
        let copy = vm::clone(&self.vim, vm, &self.place, &name, None, &tagged, self.limits.task)
            .await
            .map_err(self.error("cloning the VM"))?;
        // Recorded while still a VM (vCenter does not reconfigure templates), then marked.
        let spec = vm::config_spec(self.settings.notes.as_deref(), None, None, "", &self.artifact_entries(&path));
        vm::reconfigure(&self.vim, &copy, &spec, "recording the artifact", self.limits.task)
            .await
            .map_err(self.error("recording the fingerprint on the copy"))?;
        self.vim.mark_as_template(&copy).await.map_err(self.error("marking the copy as template"))?;
        self.job.release(&resource)?;
        Ok((copy, path))
    }

    fn artifact(&self, template: &MoRef, path: &str) -> Artifact {
        let job = self.job;
        Artifact {
            image: job.image.clone(),
            builder: crate::NAME.into(),
            id: path.to_string(),
            locations: BTreeMap::from([(crate::LOCATION.to_string(), path.to_string())]),
            fingerprint: job.fingerprint.clone(),
            source: self.source_id.clone(),
            parent: match &job.source {
                BuildSource::Parent(p) => Some(p.image.clone()),
                BuildSource::Root(_) => None,
            },
            build_id: job.build_id.clone(),
            created: Utc::now(),
            extra: BTreeMap::from([
                ("moref".to_string(), template.value.clone()),
                ("url".to_string(), self.endpoint.url.clone()),
            ]),
        }
    }
}

fn find_snapshot(list: &crate::soap::Node, name: &str) -> Option<MoRef> {
    for tree in list.all("VirtualMachineSnapshotTree") {
        if tree.text_at(&["name"]) == Some(name) {
            return tree.child("snapshot").and_then(MoRef::of);
        }
        if let Some(found) = tree.child("childSnapshotList").and_then(|c| find_snapshot_in(c, name)) {
            return Some(found);
        }
    }
    None
}

fn find_snapshot_in(tree: &crate::soap::Node, name: &str) -> Option<MoRef> {
    if tree.text_at(&["name"]) == Some(name) {
        return tree.child("snapshot").and_then(MoRef::of);
    }
    tree.all("childSnapshotList").find_map(|c| find_snapshot_in(c, name))
}

/// The `prepare` phase: log in, resolve where the VM goes and what it clones, make the keys.
pub(crate) async fn prepare<'a>(
    b: &'a crate::VsphereBuilder,
    job: &'a BuildJob,
) -> Result<Box<dyn Build + 'a>, BuildError> {
    let image = job.image()?;
    let settings = crate::settings::of(image).cloned().unwrap_or_default();
    let endpoint = b.endpoint(&job.tree, image)?;
    let vim = b.session(&endpoint).await?;
    let place = crate::inventory::place(&vim, &settings).await.map_err(|e| in_image(job, e))?;
    let source = match crate::source_ref(job) {
        Some(m) => m,
        None => {
            return Err(BuildError::new(
                ErrorKind::Internal,
                format!("image `{}`: the source has no reference", job.image),
            ));
        }
    };
    let source_id = job.source.id_in(crate::LOCATION);
    let name = match &settings.template_name {
        Some(n) => n.get_ref().clone(),
        None => format!("{}-{}", job.image, job.build_id),
    };
    let (login_key, login_public) = imgbake_ssh::generate_ed25519(&format!("imgbake-{}", job.build_id))?;
    let (host_key, host_public) = imgbake_ssh::generate_ed25519(&format!("imgbake-{}-host", job.build_id))?;
    let host_private = host_key
        .to_openssh(imgbake_ssh::LineEnding::LF)
        .map_err(|e| BuildError::new(ErrorKind::Internal, format!("cannot encode the host key: {e}")))?
        .to_string();
    if let Ok(text) = login_key.to_openssh(imgbake_ssh::LineEnding::LF) {
        job.write_key_file(&text)?;
    }
    let limits = Limits {
        task: settings.task_timeout.map(|d| d.get()).unwrap_or(crate::DEFAULT_TASK),
        ip: settings.ip_timeout.map(|d| d.get()).unwrap_or(crate::DEFAULT_IP),
        shutdown: settings.shutdown_timeout.map(|d| d.get()).unwrap_or(crate::DEFAULT_SHUTDOWN),
        poll: b.options.poll.clone(),
    };
    Ok(Box::new(VsphereBuild {
        job,
        settings,
        endpoint,
        vim,
        place,
        source,
        source_id,
        name,
        limits,
        keys: BuildKeys { host_private, host_public, login_public },
        login_key,
        vm: None,
    }))
}

fn in_image(job: &BuildJob, e: BuildError) -> BuildError {
    BuildError { message: format!("image `{}`: {}", job.image, e.message), ..e }
}
