//! One qemu build, phase by phase (core drives them, see [`imgbake_core::builder`]): prepare the
//! overlay and the seed → launch QEMU → connect over the forwarded SSH port → (core: provision,
//! sanitize) → shut down with the ACPI power button → capture the overlay as the artifact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{Build, BuildJob, BuildSource};
use imgbake_core::cleanup::Resource;
use imgbake_core::communicator::{CommError, Communicator, ExecRequest};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::reboot::PlatformReboot;
use imgbake_core::sanitize::SanitizeItems;
use imgbake_core::wait::Wait;
use imgbake_ssh::SshCommunicator;
use imgbake_ssh::spec::{Machine as SshMachine, ssh_config};

use crate::accel::Choice;
use crate::builder::QemuBuilder;
use crate::disk;
use crate::error::QemuError;
use crate::machine::{LaunchSpec, Machine, QmpReset};
use crate::process;
use crate::seed::Seed;
use crate::settings::{OutputFormat, Settings};
use crate::sidecar::{self, Sidecar};
use crate::source::{self, RootSource};
use crate::{KIND, LOCATION};

fn local(what: &str, path: &Path, e: std::io::Error) -> BuildError {
    QemuError::io(what, path, e).into()
}

/// What a build starts from, as files.
struct Start {
    disk: PathBuf,
    format: String,
    virtual_size: u64,
    kernel: Option<(PathBuf, Option<PathBuf>, Option<String>)>,
    source_id: String,
}

async fn start_of(job: &BuildJob, tree: &Tree, image: &Image) -> Result<Start, BuildError> {
    match &job.source {
        BuildSource::Root(resolved) => {
            let RootSource { disk, format, virtual_size, kernel } = source::root_source(tree, image).await?;
            Ok(Start { disk, format, virtual_size, kernel, source_id: resolved.id.clone() })
        }
        BuildSource::Parent(parent) => {
            let path = parent.locations.get(LOCATION).map(PathBuf::from).ok_or_else(|| {
                BuildError::new(
                    ErrorKind::Config,
                    format!(
                        "the parent artifact {} of image `{}` is not a local disk (no path)",
                        parent.id, image.name
                    ),
                )
            })?;
            let disk = disk::canonical(&path).map_err(|e| {
                BuildError::new(
                    ErrorKind::Local,
                    format!("image `{}`: the parent artifact's disk is gone; rebuild `{}`", image.name, parent.image),
                )
                .caused_by(e)
            })?;
            let info = disk::info(&disk).await?;
            // Direct kernel boot applies to the whole chain: the kernel lives outside the disks.
            let root = source::chain_root(tree, image);
            let kernel = match root.source.as_ref().and_then(|s| crate::schema::source_of(s.get_ref()).kernel.as_ref())
            {
                Some(_) => source::root_source(tree, root).await?.kernel,
                None => None,
            };
            Ok(Start {
                disk,
                format: info.format,
                virtual_size: info.virtual_size,
                kernel,
                source_id: parent.id.clone(),
            })
        }
    }
}

/// The build's private directory (seed keys, QMP socket, logs), journaled.
fn work_dir(job: &BuildJob, tree: &Tree, image: &Image) -> Result<(PathBuf, Resource), BuildError> {
    // A short temp path: Unix socket paths are limited to 108 bytes.
    let work = std::env::temp_dir().join(format!("imgbake-qemu-{}", uuid::Uuid::new_v4().simple()));
    let work_res = Resource::new(KIND, "dir", work.display().to_string())
        .with("build_id", job.build_id.clone())
        .with("image", image.name.clone());
    job.record(work_res.clone())?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&work).map_err(|e| local("creating", &work, e))?;
    }
    let marker = serde_json::json!({ "build_id": job.build_id, "image": image.name, "tree": tree.name(), "created": Utc::now() });
    std::fs::write(work.join("build.json"), marker.to_string()).map_err(|e| local("writing", &work, e))?;
    Ok((work, work_res))
}

/// The disk size to grow the overlay to, if any (disks only grow).
fn grown_size(s: &Settings, image: &Image, start: &Start) -> Result<Option<u64>, BuildError> {
    match s.disk_size {
        Some((bytes, _)) if bytes > start.virtual_size => Ok(Some(bytes)),
        Some((bytes, span)) if bytes < start.virtual_size => Err(BuildError::new(
            ErrorKind::Config,
            format!(
                "image `{}`: qemu.disk_size ({} MiB) is smaller than the source disk ({} MiB); disks can only grow",
                image.name,
                bytes >> 20,
                start.virtual_size >> 20
            ),
        )
        .at(span)),
        _ => Ok(None),
    }
}

/// One qemu build in progress.
pub(crate) struct QemuBuild<'a> {
    job: &'a BuildJob,
    tree: &'a Tree,
    image: &'a Image,
    s: Settings,
    start: Start,
    output_dir: PathBuf,
    stem: String,
    work: PathBuf,
    work_res: Resource,
    /// The overlay being built, copy-on-write on the parent (or the source disk).
    partial: PathBuf,
    partial_res: Resource,
    backing: String,
    seed: Seed,
    choice: Choice,
    machine: Option<Machine>,
    process_res: Option<Resource>,
}

/// The `prepare` phase: the overlay, the work directory and the seed; the accelerator.
pub(crate) async fn prepare<'a>(b: &'a QemuBuilder, job: &'a BuildJob) -> Result<QemuBuild<'a>, BuildError> {
    let tree = job.tree.as_ref();
    let image = job.image()?;
    let s = Settings::resolve(tree, image)?;
    let start = start_of(job, tree, image).await?;
    std::fs::create_dir_all(&s.output_dir).map_err(|e| local("creating the output directory", &s.output_dir, e))?;
    let output_dir = disk::canonical(&s.output_dir)?;
    let stem = format!("{}-{}", image.name, job.build_id);
    let (work, work_res) = work_dir(job, tree, image)?;

    let partial = output_dir.join(format!("{stem}.partial.qcow2"));
    let partial_res = Resource::new(KIND, "file", partial.display().to_string()).with("build_id", job.build_id.clone());
    job.record(partial_res.clone())?;
    let size = grown_size(&s, image, &start)?;
    let backing = disk::backing_reference(&partial, &start.disk);
    disk::create_overlay(&partial, &backing, &start.format, size).await?;

    let seed = Seed::write(&work, &job.build_id)?;
    let choice = b.accelerator(&s, tree, image).await?;
    job.events.info(format!("accelerator {}: {}", choice.accel, choice.reason));
    Ok(QemuBuild {
        job,
        tree,
        image,
        s,
        start,
        output_dir,
        stem,
        work,
        work_res,
        partial,
        partial_res,
        backing,
        seed,
        choice,
        machine: None,
        process_res: None,
    })
}

impl QemuBuild<'_> {
    fn machine(&mut self) -> Result<&mut Machine, BuildError> {
        self.machine.as_mut().ok_or_else(|| BuildError::new(ErrorKind::Internal, "QEMU is not running"))
    }

    /// Log in, racing QEMU exiting; the errors say what the console showed.
    async fn login(&mut self, comm: &SshCommunicator, port: u16) -> Result<(), BuildError> {
        let (image, s) = (self.image, &self.s);
        let wait = Wait::new(s.boot_timeout).interval(Duration::from_millis(250), Duration::from_secs(2));
        let machine =
            self.machine.as_mut().ok_or_else(|| BuildError::new(ErrorKind::Internal, "QEMU is not running"))?;
        let connected = tokio::select! {
            r = comm.connect(&wait) => r,
            status = machine.exited() => {
                return Err(BuildError::new(
                    ErrorKind::Platform,
                    format!(
                        "image `{}`: QEMU exited before the machine accepted SSH ({status}); QEMU log: {}; console:\n{}",
                        image.name, machine.log_tail(1000), machine.console_tail(2000)
                    ),
                ));
            }
        };
        let Err(e) = connected else { return Ok(()) };
        let console = machine.console_tail(2000);
        Err(match &e {
            CommError::ConnectTimeout { waited, last_error, .. } => BuildError::new(
                ErrorKind::Timeout,
                format!(
                    "image `{}`: the machine did not accept SSH on 127.0.0.1:{port} within {waited:?} (qemu.boot_timeout {:?}); last error: {last_error}. Does the source disk boot and start an SSH server that reads the imgbake seed (docs/builders/qemu.md)? Last console output:\n{}",
                    image.name,
                    s.boot_timeout,
                    if console.is_empty() { "(none)" } else { &console }
                ),
            ),
            _ => BuildError::new(ErrorKind::Communicator, format!("image `{}`: cannot log in over SSH: {e}", image.name)),
        }
        .caused_by(e))
    }

    /// The artifact and its sidecar, once the disk is in place.
    fn artifact(&self, disk_path: &Path, backing_written: Option<String>) -> Result<Artifact, BuildError> {
        let (job, image, s) = (self.job, self.image, &self.s);
        let file_name = disk_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut extra = BTreeMap::from([
            ("format".to_string(), s.format.name().to_string()),
            ("accelerator".to_string(), self.choice.accel.to_string()),
        ]);
        if let Some(b) = &backing_written {
            extra.insert("backing".into(), b.clone());
        }
        let artifact = Artifact {
            image: image.name.clone(),
            builder: KIND.into(),
            id: file_name.clone(),
            locations: BTreeMap::from([(LOCATION.to_string(), disk_path.display().to_string())]),
            fingerprint: job.fingerprint.clone(),
            source: self.start.source_id.clone(),
            parent: image.parent.as_ref().map(|p| p.get_ref().clone()),
            build_id: job.build_id.clone(),
            created: Utc::now(),
            extra,
        };
        let side = Sidecar {
            imgbake_qemu_artifact: sidecar::VERSION,
            tree: self.tree.name(),
            disk: file_name,
            format: s.format.name().into(),
            backing: backing_written,
            tags: image.tags.clone(),
            artifact: artifact.clone(),
        };
        sidecar::write(&self.output_dir, &side)?;
        Ok(artifact)
    }
}

#[async_trait]
impl Build for QemuBuild<'_> {
    async fn launch(&mut self) -> Result<(), BuildError> {
        let (job, image, s) = (self.job, self.image, &self.s);
        let spec = LaunchSpec {
            binary: s.binary.clone(),
            accel: self.choice.accel.to_string(),
            memory_mib: s.memory_mib,
            cpus: s.cpus,
            disk: self.partial.clone(),
            kernel: self.start.kernel.clone(),
            fw_cfg: self.seed.fw_cfg.clone(),
            work_dir: self.work.clone(),
            // imgbake:BUILD:IMAGE:TREE — what `imgbake clean` finds a leftover QEMU by.
            name: format!("imgbake:{}:{}:{}", job.build_id, image.name, self.tree.name()),
            extra_args: s.qemu_args.clone(),
            may_outlive: job.keep_on_failure,
        };
        let mut process_res = None;
        let machine = Machine::launch(&spec, |pid, started| {
            let r = Resource::new(KIND, "process", pid.to_string())
                .with("started", started.to_string())
                .with("build_id", job.build_id.clone());
            job.record(r.clone())?;
            process_res = Some(r);
            Ok(())
        })
        .await?;
        self.machine = Some(machine);
        self.process_res = process_res;
        Ok(())
    }

    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
        let (job, ev) = (self.job, &self.job.events);
        let port = self.machine()?.ssh_port();
        let client_key = self.seed.client_key.clone();
        let target = SshMachine::new("127.0.0.1")
            .port(port)
            .generated_key(client_key.clone())
            .pinned_host_key(self.seed.host_pub.clone());
        let comm = SshCommunicator::new(ssh_config(self.tree, self.image, &target)?).with_events(ev.clone());
        if job.key_file.is_some()
            && let Ok(text) = client_key.to_openssh(Default::default())
            && let Some(key) = job.write_key_file(&text)?
        {
            ev.info(format!("ssh -i {} -p {port} -o StrictHostKeyChecking=no {}", key.display(), comm.target()));
        }
        self.login(&comm, port).await?;
        if let Ok(id) = comm.boot_identity().await {
            ev.emit(EventKind::Connected { target: comm.target(), boot_id: Some(id.0) });
        }
        Ok(Box::new(comm))
    }

    fn platform_reboot(&self) -> Option<Arc<dyn PlatformReboot>> {
        let m = self.machine.as_ref()?;
        Some(Arc::new(QmpReset { socket: m.qmp_socket().to_path_buf(), pid: m.pid(), started: m.started() }))
    }

    async fn lost(&mut self) -> BuildError {
        let name = self.image.name.clone();
        let Some(machine) = self.machine.as_mut() else { return std::future::pending().await };
        let status = machine.exited().await;
        BuildError::new(
            ErrorKind::Platform,
            format!(
                "image `{name}`: QEMU exited during provisioning ({status}): a step powered the machine off, or QEMU crashed; console:\n{}",
                machine.console_tail(2000)
            ),
        )
    }

    fn sanitize_items(&self) -> SanitizeItems {
        self.seed.sanitize_items()
    }

    async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError> {
        let (ev, image, timeout) = (self.job.events.clone(), self.image, self.s.shutdown_timeout);
        // Flush the guest's caches while it still answers: a hard stop after this loses nothing.
        let sync = ExecRequest { timeout: Some(Duration::from_secs(120)), ..ExecRequest::new("sync").captured() };
        if let Err(e) = comm.exec(&sync, &EventSink::discard()).await {
            ev.warn(format!("`sync` before shutdown failed: {e}"));
        }
        comm.disconnect().await;
        let machine = self.machine()?;
        match machine.powerdown(timeout).await {
            Ok(true) => {}
            Ok(false) => {
                ev.warn(format!(
                    "image `{}`: no clean shutdown within {timeout:?} (qemu.shutdown_timeout) after the ACPI power button; stopping QEMU (disks were synced)",
                    image.name
                ));
                machine.kill().await;
            }
            Err(e) => {
                ev.warn(format!("ACPI shutdown failed ({e}); stopping QEMU (disks were synced)"));
                machine.kill().await;
            }
        }
        if let Some(r) = &self.process_res {
            self.job.release(r)?;
        }
        Ok(())
    }

    /// The overlay becomes the artifact as it is, or converted; then the sidecar.
    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        let job = self.job;
        let disk_path = self.output_dir.join(format!("{}.{}", self.stem, self.s.format.extension()));
        let disk_res =
            Resource::new(KIND, "file", disk_path.display().to_string()).with("build_id", job.build_id.clone());
        job.record(disk_res.clone())?;
        let backing_written = match self.s.format {
            OutputFormat::Overlay => {
                std::fs::rename(&self.partial, &disk_path).map_err(|e| local("renaming into place", &disk_path, e))?;
                Some(self.backing.clone())
            }
            other => {
                disk::convert(&self.partial, &disk_path, other.disk_format()).await?;
                process::remove_file(&self.partial)?;
                None
            }
        };
        job.release(&self.partial_res)?;
        let artifact = self.artifact(&disk_path, backing_written)?;
        job.release(&disk_res)?;
        process::remove_dir(&self.work)?;
        job.release(&self.work_res)?;
        job.events.info(format!("artifact {}", disk_path.display()));
        Ok(artifact)
    }

    async fn failed(&mut self, error: &BuildError) {
        let Some(mut machine) = self.machine.take() else { return };
        if error.kind == ErrorKind::Aborted && self.job.keep_on_failure {
            // The user chose to inspect the machine: it stays up (and on the journal).
            self.job.events.warn(format!(
                "QEMU (pid {}) keeps running for inspection on 127.0.0.1:{}",
                machine.pid(),
                machine.ssh_port()
            ));
            machine.detach();
        } else {
            machine.kill().await;
        }
    }
}
