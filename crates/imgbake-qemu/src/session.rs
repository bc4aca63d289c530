//! A QEMU machine session, the part of a build every QEMU-run builder shares (the `qemu` builder,
//! and builders that run their machine under QEMU and write another platform's format, such as
//! `virtualbox`): a qcow2 overlay on a start disk, a work directory with the seed, QEMU launched
//! with the overlay, SSH through the forwarded port, the platform reboot over QMP, and the ACPI
//! shutdown. What the overlay becomes (the capture) is the caller's.
//!
//! A builder implements [`Capture`] (what the overlay becomes) and hands [`SessionBuild`] to core
//! as its `Build`. Everything a session creates is journaled under the caller's builder `kind`, so
//! that builder's `destroy` removes it with [`destroy`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use imgbake_config::{Image, Tree};
use imgbake_core::builder::BuildJob;
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
use crate::settings::Settings;

fn local(what: &str, path: &Path, e: std::io::Error) -> BuildError {
    QemuError::io(what, path, e).into()
}

/// What a session boots: a disk (any format QEMU reads; it becomes the overlay's backing file,
/// never written) and, for direct kernel boot, a kernel.
#[derive(Clone, Debug)]
pub struct StartDisk {
    /// The disk, canonical.
    pub disk: PathBuf,
    /// Its format (`qcow2`, `raw`, `vmdk`...).
    pub format: String,
    /// Its virtual size in bytes.
    pub virtual_size: u64,
    /// Direct kernel boot: kernel, initrd, command line.
    pub kernel: Option<(PathBuf, Option<PathBuf>, Option<String>)>,
    /// What the artifact records as its source (the resolved source's id, or the parent artifact's).
    pub source_id: String,
}

/// Remove what a session journaled (`process`, `file`, `dir` resources of any builder kind).
pub async fn destroy(resource: &Resource) -> Result<(), BuildError> {
    match resource.kind.as_str() {
        "process" => crate::machine::stop_process(resource).await,
        "file" => process::remove_file(Path::new(&resource.id)).map_err(Into::into),
        "dir" => process::remove_dir(Path::new(&resource.id)).map_err(Into::into),
        other => Err(BuildError::new(
            ErrorKind::Local,
            format!("a QEMU session does not know how to remove a `{other}` ({})", resource.describe()),
        )),
    }
}

/// The build's private directory (seed keys, QMP socket, logs), journaled.
fn work_dir(job: &BuildJob, kind: &str, tree: &Tree, image: &Image) -> Result<(PathBuf, Resource), BuildError> {
    // A short temp path: Unix socket paths are limited to 108 bytes.
    let work = std::env::temp_dir().join(format!("imgbake-qemu-{}", uuid::Uuid::new_v4().simple()));
    let work_res = Resource::new(kind, "dir", work.display().to_string())
        .with("build_id", job.build_id.clone())
        .with("image", image.name.clone());
    job.record(work_res.clone())?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&work).map_err(|e| local("creating", &work, e))?;
    }
    let marker = serde_json::json!({ "build_id": job.build_id, "builder": kind, "image": image.name, "tree": tree.name(), "created": Utc::now() });
    std::fs::write(work.join("build.json"), marker.to_string()).map_err(|e| local("writing", &work, e))?;
    Ok((work, work_res))
}

/// The disk size to grow the overlay to, if any (disks only grow).
fn grown_size(kind: &str, s: &Settings, image: &Image, start: &StartDisk) -> Result<Option<u64>, BuildError> {
    match s.disk_size {
        Some((bytes, _)) if bytes > start.virtual_size => Ok(Some(bytes)),
        Some((bytes, span)) if bytes < start.virtual_size => Err(BuildError::new(
            ErrorKind::Config,
            format!(
                "image `{}`: {kind}.disk_size ({} MiB) is smaller than the source disk ({} MiB); disks can only grow",
                image.name,
                bytes >> 20,
                start.virtual_size >> 20
            ),
        )
        .at(span)),
        _ => Ok(None),
    }
}

/// One QEMU machine in progress: created by [`Session::prepare`], driven through [`SessionBuild`].
pub struct Session<'a> {
    job: &'a BuildJob,
    tree: &'a Tree,
    image: &'a Image,
    kind: &'static str,
    s: Settings,
    start: StartDisk,
    work: PathBuf,
    work_res: Resource,
    /// The overlay being built, copy-on-write on the start disk.
    partial: PathBuf,
    partial_res: Resource,
    backing: String,
    seed: Seed,
    choice: Choice,
    machine: Option<Machine>,
    process_res: Option<Resource>,
}

impl<'a> Session<'a> {
    /// Create the overlay `partial` on `start` (grown to `s.disk_size`), the work directory and the
    /// seed, and choose the accelerator (`qemu` caches the `auto` probe). Journaled under `kind`.
    pub async fn prepare(
        qemu: &QemuBuilder,
        job: &'a BuildJob,
        kind: &'static str,
        s: Settings,
        start: StartDisk,
        partial: PathBuf,
    ) -> Result<Session<'a>, BuildError> {
        let tree = job.tree.as_ref();
        let image = job.image()?;
        let (work, work_res) = work_dir(job, kind, tree, image)?;
        let partial_res =
            Resource::new(kind, "file", partial.display().to_string()).with("build_id", job.build_id.clone());
        job.record(partial_res.clone())?;
        let size = grown_size(kind, &s, image, &start)?;
        let backing = disk::backing_reference(&partial, &start.disk);
        disk::create_overlay(&partial, &backing, &start.format, size).await?;
        let seed = Seed::write(&work, &job.build_id)?;
        let choice = qemu.accelerator(&s, tree, image).await?;
        job.events.info(format!("accelerator {}: {}", choice.accel, choice.reason));
        Ok(Session {
            job,
            tree,
            image,
            kind,
            s,
            start,
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

    /// The build job.
    pub fn job(&self) -> &'a BuildJob {
        self.job
    }

    /// The tree.
    pub fn tree(&self) -> &'a Tree {
        self.tree
    }

    /// The image being built.
    pub fn image(&self) -> &'a Image {
        self.image
    }

    /// The overlay the machine writes to (backed by the start disk).
    pub fn overlay(&self) -> &Path {
        &self.partial
    }

    /// The overlay's journal entry (release it once the overlay is renamed or removed).
    pub fn overlay_resource(&self) -> &Resource {
        &self.partial_res
    }

    /// How the overlay names its backing file.
    pub fn backing(&self) -> &str {
        &self.backing
    }

    /// What the session started from.
    pub fn start(&self) -> &StartDisk {
        &self.start
    }

    /// The resolved settings.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// The accelerator used (`kvm` or `tcg`).
    pub fn accelerator(&self) -> &'static str {
        self.choice.accel
    }

    /// The session's private directory (removed by [`Session::finish`]); a caller may keep files of
    /// its own there that must live as long as the machine (an unpacked start disk).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// After the capture: remove the overlay if the capture left it, and the work directory.
    pub fn finish(&mut self) -> Result<(), BuildError> {
        process::remove_file(&self.partial)?;
        self.job.release(&self.partial_res)?;
        process::remove_dir(&self.work)?;
        self.job.release(&self.work_res)
    }

    fn machine(&mut self) -> Result<&mut Machine, BuildError> {
        self.machine.as_mut().ok_or_else(|| BuildError::new(ErrorKind::Internal, "QEMU is not running"))
    }

    /// Log in, racing QEMU exiting; the errors say what the console showed.
    async fn login(&mut self, comm: &SshCommunicator, port: u16) -> Result<(), BuildError> {
        let (image, s, kind) = (self.image, &self.s, self.kind);
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
                    "image `{}`: the machine did not accept SSH on 127.0.0.1:{port} within {waited:?} ({}.boot_timeout {:?}); last error: {last_error}. Does the source disk boot and start an SSH server that reads the imgbake seed (docs/builders/qemu.md)? Last console output:\n{}",
                    image.name,
                    kind,
                    s.boot_timeout,
                    if console.is_empty() { "(none)" } else { &console }
                ),
            ),
            _ => BuildError::new(ErrorKind::Communicator, format!("image `{}`: cannot log in over SSH: {e}", image.name)),
        }
        .caused_by(e))
    }

    pub async fn launch(&mut self) -> Result<(), BuildError> {
        let (job, image, s, kind) = (self.job, self.image, &self.s, self.kind);
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
            let r = Resource::new(kind, "process", pid.to_string())
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

    pub async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
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

    pub fn platform_reboot(&self) -> Option<Arc<dyn PlatformReboot>> {
        let m = self.machine.as_ref()?;
        Some(Arc::new(QmpReset { socket: m.qmp_socket().to_path_buf(), pid: m.pid(), started: m.started() }))
    }

    pub async fn lost(&mut self) -> BuildError {
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

    pub fn sanitize_items(&self) -> SanitizeItems {
        self.seed.sanitize_items()
    }

    pub async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError> {
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

    pub async fn failed(&mut self, error: &BuildError) {
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

/// A builder's build whose machine is a [`Session`]: it says only what the overlay becomes.
#[async_trait::async_trait]
pub trait Capture<'a>: Send {
    /// The session it runs.
    fn session(&self) -> &Session<'a>;

    /// The session it runs, to drive.
    fn session_mut(&mut self) -> &mut Session<'a>;

    /// The `capture` phase (the machine is down): the overlay becomes the artifact.
    async fn capture(&mut self) -> Result<imgbake_core::artifact::Artifact, BuildError>;
}

/// A [`Capture`] as a [`Build`](imgbake_core::builder::Build): every phase but the capture is the
/// session's.
pub struct SessionBuild<C>(pub C);

#[async_trait::async_trait]
impl<'a, C: Capture<'a>> imgbake_core::builder::Build for SessionBuild<C> {
    async fn launch(&mut self) -> Result<(), BuildError> {
        self.0.session_mut().launch().await
    }

    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
        self.0.session_mut().connect().await
    }

    fn platform_reboot(&self) -> Option<Arc<dyn PlatformReboot>> {
        self.0.session().platform_reboot()
    }

    async fn lost(&mut self) -> BuildError {
        self.0.session_mut().lost().await
    }

    fn sanitize_items(&self) -> SanitizeItems {
        self.0.session().sanitize_items()
    }

    async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError> {
        self.0.session_mut().shutdown(comm).await
    }

    async fn capture(&mut self) -> Result<imgbake_core::artifact::Artifact, BuildError> {
        self.0.capture().await
    }

    async fn failed(&mut self, error: &BuildError) {
        self.0.session_mut().failed(error).await
    }
}
