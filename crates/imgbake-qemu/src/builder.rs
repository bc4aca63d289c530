//! [`QemuBuilder`]: the [`Builder`] for local disk images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{BuildJob, BuildSource, Builder, ResolvedSource, SweepFilter};
use imgbake_core::cleanup::Resource;
use imgbake_core::communicator::{CommError, Communicator, ExecRequest};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::reboot::{MachineState, PlatformReboot};
use imgbake_core::wait::{self, Poll, Wait};
use imgbake_ssh::SshCommunicator;
use imgbake_ssh::spec::{Machine as SshMachine, ssh_config};

use crate::accel::{self, Choice};
use crate::disk;
use crate::error::QemuError;
use crate::machine::{LaunchSpec, Machine};
use crate::process;
use crate::settings::{Accelerator, OutputFormat, Settings};
use crate::sidecar::{self, Sidecar};
use crate::source::{self, RootSource};
use crate::{KIND, LOCATION};

/// What the seed put on the guest for this build, for the `sanitize` phase: the base image's seed hook
/// installs the host key and the login key under /run/imgbake (a tmpfs, but a step may have copied
/// them to disk, and a base image of one's own may keep them elsewhere).
pub fn seed_sanitize_items(host_pub: &str, client_pub: &str) -> imgbake_core::sanitize::SanitizeItems {
    imgbake_core::sanitize::SanitizeItems {
        host_public_key: Some(host_pub.to_string()),
        host_key_files: vec!["/run/imgbake/ssh_host_ed25519_key".into()],
        authorized_keys: vec![client_pub.to_string()],
        files: vec!["/run/imgbake/authorized_keys/root".into(), "/run/imgbake/sshd.conf".into()],
    }
}

/// fw_cfg names the base image's seed hook reads (see docs/builders/qemu.md).
pub const SEED_AUTHORIZED_KEYS: &str = "opt/imgbake/authorized_keys";
/// fw_cfg name of the injected SSH host key.
pub const SEED_HOST_KEY: &str = "opt/imgbake/ssh_host_ed25519_key";

/// Builds images as qcow2 overlays under QEMU. Cheap to create; holds only the accelerator decision
/// (probed once per process for `accelerator = "auto"`).
#[derive(Debug, Default)]
pub struct QemuBuilder {
    auto: tokio::sync::OnceCell<Choice>,
}

impl QemuBuilder {
    /// A builder.
    pub fn new() -> Self {
        QemuBuilder::default()
    }

    async fn accelerator(&self, s: &Settings, tree: &Tree, image: &Image) -> Result<Choice, BuildError> {
        match s.accelerator {
            Accelerator::Tcg => Ok(Choice { accel: "tcg", reason: "qemu.accelerator = \"tcg\"".into() }),
            Accelerator::Kvm if accel::kvm_device_usable() => {
                Ok(Choice { accel: "kvm", reason: "qemu.accelerator = \"kvm\"".into() })
            }
            Accelerator::Kvm => Err(BuildError::new(
                ErrorKind::Config,
                format!(
                    "image `{}`: qemu.accelerator = \"kvm\" but /dev/kvm cannot be opened read-write; use \"auto\" or \"tcg\", or give this user access to /dev/kvm",
                    image.name
                ),
            )),
            Accelerator::Auto => {
                let kernels = probe_kernels(tree, image);
                Ok(self.auto.get_or_init(|| accel::auto(&s.binary, &kernels)).await.clone())
            }
        }
    }
}

/// Kernels the KVM probe may boot: the chain's own direct-boot kernel, the `vmlinuz` that
/// scripts/make-base-image.sh puts next to the base disk, the host's.
fn probe_kernels(tree: &Tree, image: &Image) -> Vec<PathBuf> {
    let root = source::chain_root(tree, image);
    let mut out = Vec::new();
    if let Some(src) = &root.source {
        if let Some(k) = &crate::schema::source_of(src.get_ref()).kernel {
            out.push(tree.path(k));
        }
        if let Some(d) = &crate::schema::source_of(src.get_ref()).disk
            && let Ok(disk) = tree.path(d).canonicalize()
            && let Some(dir) = disk.parent()
        {
            out.push(dir.join("vmlinuz"));
        }
    }
    out.push(PathBuf::from("/boot/vmlinuz"));
    out.push(PathBuf::from("/vmlinuz"));
    out
}

fn local(what: &str, path: &Path, e: std::io::Error) -> BuildError {
    QemuError::io(what, path, e).into()
}

/// Reboots through QEMU's monitor (a hardware reset): works even when the guest no longer answers.
struct QmpReset {
    socket: PathBuf,
    pid: u32,
    /// QEMU's start time, so a recycled pid is not taken for it.
    started: u64,
}

#[async_trait]
impl PlatformReboot for QmpReset {
    fn describe(&self) -> String {
        format!("QEMU system_reset (pid {})", self.pid)
    }

    async fn reboot(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        crate::qmp::execute(&self.socket, "system_reset", None, Duration::from_secs(10)).await?;
        Ok(())
    }

    async fn machine_state(&self) -> MachineState {
        // The guest powered off (QEMU exits then) or QEMU died: nothing will answer SSH again.
        match crate::process::start_time(self.pid) {
            Some(t) if t == self.started => MachineState::Running,
            _ => MachineState::Gone(format!(
                "the QEMU process (pid {}) has exited: the guest powered off, or QEMU crashed",
                self.pid
            )),
        }
    }
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

fn write_private(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| local("creating", path, e))?;
    f.write_all(data).map_err(|e| local("writing", path, e))
}

#[async_trait]
impl Builder for QemuBuilder {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn resolve_source(&self, tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
        source::resolve(tree, image).await
    }

    async fn list_artifacts(&self, tree: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
        let mut dirs: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
        for image in images.iter().filter(|i| i.has_builder(KIND)) {
            let s = Settings::resolve(tree, image)?;
            dirs.entry(s.output_dir).or_default().push(&image.name);
        }
        let name = tree.name();
        let mut out = Vec::new();
        for (dir, names) in dirs {
            for s in sidecar::scan(&dir)? {
                if s.tree == name && s.artifact.builder == KIND && names.contains(&s.artifact.image.as_str()) {
                    out.push(s.artifact);
                }
            }
        }
        Ok(out)
    }

    async fn build(&self, job: BuildJob) -> Result<Artifact, BuildError> {
        let tree = job.tree.clone();
        let image = job.image()?.clone();
        let s = Settings::resolve(&tree, &image)?;
        let ev = job.events.clone();
        ev.emit(EventKind::Phase { phase: "prepare".into() });
        let start = start_of(&job, &tree, &image).await?;
        std::fs::create_dir_all(&s.output_dir).map_err(|e| local("creating the output directory", &s.output_dir, e))?;
        let output_dir = disk::canonical(&s.output_dir)?;
        let stem = format!("{}-{}", image.name, job.build_id);

        // Private files of the build (seed keys, QMP socket, logs) in a short temp path: Unix socket
        // paths are limited to 108 bytes.
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

        // The overlay: copy-on-write on the parent (or the source disk).
        let partial = output_dir.join(format!("{stem}.partial.qcow2"));
        let partial_res =
            Resource::new(KIND, "file", partial.display().to_string()).with("build_id", job.build_id.clone());
        job.record(partial_res.clone())?;
        let size = match s.disk_size {
            Some((bytes, _)) if bytes > start.virtual_size => Some(bytes),
            Some((bytes, span)) if bytes < start.virtual_size => {
                return Err(BuildError::new(
                    ErrorKind::Config,
                    format!(
                        "image `{}`: qemu.disk_size ({} MiB) is smaller than the source disk ({} MiB); disks can only grow",
                        image.name,
                        bytes >> 20,
                        start.virtual_size >> 20
                    ),
                )
                .at(span));
            }
            _ => None,
        };
        let backing = disk::backing_reference(&partial, &start.disk);
        disk::create_overlay(&partial, &backing, &start.format, size).await?;

        // The seed: a fresh login key and host key for this build, read by the guest from fw_cfg.
        let (client_key, client_pub) = imgbake_ssh::generate_ed25519(&format!("imgbake {}", job.build_id))?;
        let (host_key, host_pub) = imgbake_ssh::generate_ed25519("imgbake host key")?;
        let host_private = host_key
            .to_openssh(Default::default())
            .map_err(|e| BuildError::new(ErrorKind::Local, format!("cannot encode the host key: {e}")))?;
        let keys_file = work.join("authorized_keys");
        let host_file = work.join("ssh_host_ed25519_key");
        write_private(&keys_file, format!("{client_pub}\n").as_bytes())?;
        write_private(&host_file, host_private.as_bytes())?;

        let choice = self.accelerator(&s, &tree, &image).await?;
        ev.info(format!("accelerator {}: {}", choice.accel, choice.reason));

        ev.emit(EventKind::Phase { phase: "launch".into() });
        let spec = LaunchSpec {
            binary: s.binary.clone(),
            accel: choice.accel.to_string(),
            memory_mib: s.memory_mib,
            cpus: s.cpus,
            disk: partial.clone(),
            kernel: start.kernel.clone(),
            fw_cfg: vec![(SEED_AUTHORIZED_KEYS.into(), keys_file), (SEED_HOST_KEY.into(), host_file)],
            work_dir: work.clone(),
            // imgbake:BUILD:IMAGE:TREE — what `imgbake clean` finds a leftover QEMU by.
            name: format!("imgbake:{}:{}:{}", job.build_id, image.name, tree.name()),
            extra_args: s.qemu_args.clone(),
            may_outlive: job.keep_on_failure,
        };
        let mut process_res = None;
        let mut machine = Machine::launch(&spec, |pid, started| {
            let r = Resource::new(KIND, "process", pid.to_string())
                .with("started", started.to_string())
                .with("build_id", job.build_id.clone());
            job.record(r.clone())?;
            process_res = Some(r);
            Ok(())
        })
        .await?;

        if let Err(e) = run(&job, &tree, &image, &s, &mut machine, client_key, host_pub).await {
            if e.kind == ErrorKind::Aborted && job.keep_on_failure {
                // The user chose to inspect the machine: it stays up (and on the journal).
                job.events.warn(format!(
                    "QEMU (pid {}) keeps running for inspection on 127.0.0.1:{}",
                    machine.pid(),
                    machine.ssh_port()
                ));
                machine.detach();
            } else {
                machine.kill().await;
            }
            return Err(e);
        }
        if let Some(r) = &process_res {
            job.release(r)?;
        }

        // Capture: the overlay becomes the artifact as it is, or converted.
        ev.emit(EventKind::Phase { phase: "capture".into() });
        let disk_path = output_dir.join(format!("{stem}.{}", s.format.extension()));
        let disk_res =
            Resource::new(KIND, "file", disk_path.display().to_string()).with("build_id", job.build_id.clone());
        job.record(disk_res.clone())?;
        let backing_written = match s.format {
            OutputFormat::Overlay => {
                std::fs::rename(&partial, &disk_path).map_err(|e| local("renaming into place", &disk_path, e))?;
                Some(backing)
            }
            other => {
                disk::convert(&partial, &disk_path, other.disk_format()).await?;
                process::remove_file(&partial)?;
                None
            }
        };
        job.release(&partial_res)?;
        let file_name = disk_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut extra = BTreeMap::from([
            ("format".to_string(), s.format.name().to_string()),
            ("accelerator".to_string(), choice.accel.to_string()),
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
            source: start.source_id.clone(),
            parent: image.parent.as_ref().map(|p| p.get_ref().clone()),
            build_id: job.build_id.clone(),
            created: Utc::now(),
            extra,
        };
        let side = Sidecar {
            imgbake_qemu_artifact: sidecar::VERSION,
            tree: tree.name(),
            disk: file_name,
            format: s.format.name().into(),
            backing: backing_written,
            tags: image.tags.clone(),
            artifact: artifact.clone(),
        };
        sidecar::write(&output_dir, &side)?;
        job.release(&disk_res)?;
        process::remove_dir(&work)?;
        job.release(&work_res)?;
        ev.info(format!("artifact {}", disk_path.display()));
        Ok(artifact)
    }

    async fn destroy(&self, _tree: &Tree, resource: &Resource, _events: &EventSink) -> Result<(), BuildError> {
        match resource.kind.as_str() {
            "process" => stop_process(resource).await,
            "file" => process::remove_file(Path::new(&resource.id)).map_err(Into::into),
            "dir" => process::remove_dir(Path::new(&resource.id)).map_err(Into::into),
            other => Err(BuildError::new(
                ErrorKind::Local,
                format!("the qemu builder does not know how to remove a `{other}` ({})", resource.describe()),
            )),
        }
    }

    async fn sweep(&self, tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
        crate::sweep::sweep(tree, filter)
    }

    async fn delete_artifact(&self, _tree: &Tree, artifact: &Artifact, events: &EventSink) -> Result<(), BuildError> {
        let Some(path) = artifact.locations.get(LOCATION).map(PathBuf::from) else {
            return Err(BuildError::new(ErrorKind::Local, format!("artifact {} has no local path", artifact.id)));
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let users: Vec<String> = sidecar::scan(dir)?
            .into_iter()
            .filter(|s| s.backing.as_deref() == Some(name.as_str()))
            .map(|s| s.disk)
            .collect();
        if !users.is_empty() {
            return Err(BuildError::new(
                ErrorKind::Config,
                format!(
                    "{} is the backing file of {}: delete those first (or build them with qemu.format = \"qcow2\")",
                    path.display(),
                    users.join(", ")
                ),
            ));
        }
        process::remove_file(&sidecar::path_for(&path))?;
        process::remove_file(&path)?;
        events.emit(EventKind::ResourceDeleted {
            kind: format!("{KIND}.artifact"),
            id: path.display().to_string(),
            region: None,
        });
        Ok(())
    }
}

/// Connect, provision, shut down. On error the caller stops QEMU.
async fn run(
    job: &BuildJob,
    tree: &Tree,
    image: &Image,
    s: &Settings,
    machine: &mut Machine,
    client_key: Arc<imgbake_ssh::PrivateKey>,
    host_pub: String,
) -> Result<(), BuildError> {
    let ev = &job.events;
    ev.emit(EventKind::Phase { phase: "connect".into() });
    let port = machine.ssh_port();
    let target =
        SshMachine::new("127.0.0.1").port(port).generated_key(client_key.clone()).pinned_host_key(host_pub.clone());
    let config = ssh_config(tree, image, &target)?;
    let comm = SshCommunicator::new(config).with_events(ev.clone());
    if job.key_file.is_some()
        && let Ok(text) = client_key.to_openssh(Default::default())
        && let Some(key) = job.write_key_file(&text)?
    {
        ev.info(format!("ssh -i {} -p {port} -o StrictHostKeyChecking=no {}", key.display(), comm.target()));
    }
    let wait = Wait::new(s.boot_timeout).interval(Duration::from_millis(250), Duration::from_secs(2));
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
    if let Err(e) = connected {
        let console = machine.console_tail(2000);
        return Err(match &e {
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
        .caused_by(e));
    }
    if let Ok(id) = comm.boot_identity().await {
        ev.emit(EventKind::Connected { target: comm.target(), boot_id: Some(id.0) });
    }

    ev.emit(EventKind::Phase { phase: "provision".into() });
    let reset: Arc<dyn PlatformReboot> = Arc::new(QmpReset {
        socket: machine.qmp_socket().to_path_buf(),
        pid: machine.pid(),
        started: machine.started(),
    });
    let provisioned = tokio::select! {
        r = job.provisioner.provision(&comm, Some(reset)) => r,
        status = machine.exited() => Err(BuildError::new(
            ErrorKind::Platform,
            format!(
                "image `{}`: QEMU exited during provisioning ({status}): a step powered the machine off, or QEMU crashed; console:\n{}",
                image.name, machine.console_tail(2000)
            ),
        )),
    };
    if let Err(e) = provisioned {
        comm.disconnect().await;
        return Err(e);
    }

    ev.emit(EventKind::Phase { phase: "sanitize".into() });
    let client_pub = client_key.public_key().to_openssh().unwrap_or_default();
    if let Err(e) = job.provisioner.sanitize(&comm, &seed_sanitize_items(&host_pub, &client_pub)).await {
        comm.disconnect().await;
        return Err(e);
    }

    ev.emit(EventKind::Phase { phase: "shutdown".into() });
    // Flush the guest's caches while it still answers: a hard stop after this loses nothing.
    let sync = ExecRequest { timeout: Some(Duration::from_secs(120)), ..ExecRequest::new("sync").captured() };
    if let Err(e) = comm.exec(&sync, &EventSink::discard()).await {
        ev.warn(format!("`sync` before shutdown failed: {e}"));
    }
    comm.disconnect().await;
    match machine.powerdown(s.shutdown_timeout).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            ev.warn(format!(
                "image `{}`: no clean shutdown within {:?} (qemu.shutdown_timeout) after the ACPI power button; stopping QEMU (disks were synced)",
                image.name, s.shutdown_timeout
            ));
            machine.kill().await;
            Ok(())
        }
        Err(e) => {
            ev.warn(format!("ACPI shutdown failed ({e}); stopping QEMU (disks were synced)"));
            machine.kill().await;
            Ok(())
        }
    }
}

/// Stop a journaled QEMU process: SIGTERM (QEMU exits at once, as on `quit`), then SIGKILL. A process
/// that is gone — or whose pid now belongs to another process — is success.
async fn stop_process(r: &Resource) -> Result<(), BuildError> {
    let (Ok(pid), Some(started)) = (r.id.parse::<u32>(), r.extra.get("started").and_then(|s| s.parse::<u64>().ok()))
    else {
        return Err(BuildError::new(ErrorKind::Local, format!("journal entry {} has no pid/start time", r.describe())));
    };
    if !process::signal_if_same(pid, started, libc::SIGTERM) {
        return Ok(());
    }
    let gone = |limit: Duration| {
        let w = Wait::new(limit).interval(Duration::from_millis(20), Duration::from_millis(250));
        async move {
            wait::until(&w, "QEMU to exit", || async {
                if process::start_time(pid) == Some(started) {
                    Poll::Pending("running".into())
                } else {
                    Poll::Ready(())
                }
            })
            .await
            .map_err(|e: wait::WaitError<String>| e.to_string())
        }
    };
    if gone(Duration::from_secs(10)).await.is_ok() {
        return Ok(());
    }
    process::signal_if_same(pid, started, libc::SIGKILL);
    gone(Duration::from_secs(10))
        .await
        .map_err(|e| BuildError::new(ErrorKind::Local, format!("QEMU process {pid} survived SIGKILL: {e}")))
}
