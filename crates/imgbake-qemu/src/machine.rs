//! One running QEMU guest: launched with its disk, the SSH port forward and the seed; driven through
//! QMP (reset, power button, quit); stopped for good when dropped; a journaled QEMU process stopped
//! again by `imgbake clean` ([`stop_process`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::reboot::{MachineState, PlatformReboot};
use imgbake_core::wait::{self, Poll, Wait, WaitError};
use tokio::process::Child;

use crate::error::QemuError;
use crate::process::{self, describe, guarded, start_time};
use crate::qmp;

/// QMP commands answer within moments; a monitor that does not is stuck.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a launch is retried when another process took the picked port first.
const BIND_ATTEMPTS: usize = 5;

/// How to start the guest.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    /// The QEMU binary.
    pub binary: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// CPUs.
    pub cpus: u32,
    /// The disk (a qcow2 overlay).
    pub disk: PathBuf,
    /// Direct kernel boot: kernel, initrd, command line.
    pub kernel: Option<(PathBuf, Option<PathBuf>, Option<String>)>,
    /// fw_cfg entries: name (`opt/imgbake/...`), file.
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// Where the QMP socket, console log and QEMU's own log go (short path: socket names are limited).
    pub work_dir: PathBuf,
    /// `-name` of the guest; carries the build id so `imgbake clean` can find the process.
    pub name: String,
    /// Extra arguments, last.
    pub extra_args: Vec<String>,
    /// The machine may be kept for inspection after a failure (`--on-error=abort|ask`): launch it so it
    /// can outlive imgbake (no parent-death signal). It is still killed when the [`Machine`] is dropped
    /// unless [`Machine::detach`]ed, and found by `imgbake clean` otherwise.
    pub may_outlive: bool,
}

/// A running guest.
pub struct Machine {
    child: Child,
    pid: u32,
    started: u64,
    port: u16,
    qmp: PathBuf,
    console: PathBuf,
    log: PathBuf,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine").field("pid", &self.pid).field("port", &self.port).finish()
    }
}

fn escape(path: &Path) -> String {
    // QEMU option values are comma-separated; a literal comma is doubled.
    path.display().to_string().replace(',', ",,")
}

/// A loopback TCP port that was free a moment ago (QEMU binds it; a lost race is retried).
fn free_port() -> Result<u16, QemuError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| QemuError::io("binding a free port on", "127.0.0.1:0", e))?;
    l.local_addr().map(|a| a.port()).map_err(|e| QemuError::io("reading the address of", "127.0.0.1:0", e))
}

impl Machine {
    /// Start QEMU and wait until its monitor answers (the guest is then booting). `on_spawn` is called
    /// with the pid and start time the moment the process exists, so it can be journaled before any
    /// later failure.
    pub async fn launch(
        spec: &LaunchSpec,
        mut on_spawn: impl FnMut(u32, u64) -> Result<(), imgbake_core::error::BuildError>,
    ) -> Result<Machine, imgbake_core::error::BuildError> {
        let mut last = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port()?;
            match Self::launch_once(spec, port, &mut on_spawn).await {
                Ok(m) => return Ok(m),
                Err(LaunchError::PortTaken(e)) => last = Some(e),
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            imgbake_core::error::BuildError::new(imgbake_core::error::ErrorKind::Platform, "QEMU did not start")
        }))
    }

    async fn launch_once(
        spec: &LaunchSpec,
        port: u16,
        on_spawn: &mut impl FnMut(u32, u64) -> Result<(), imgbake_core::error::BuildError>,
    ) -> Result<Machine, LaunchError> {
        use imgbake_core::error::{BuildError, ErrorKind};
        let qmp = spec.work_dir.join("qmp.sock");
        let console = spec.work_dir.join("console.log");
        let log = spec.work_dir.join("qemu.log");
        let _ = std::fs::remove_file(&qmp);
        let log_file =
            std::fs::File::create(&log).map_err(|e| LaunchError::Other(QemuError::io("creating", &log, e).into()))?;
        let log_file2 =
            log_file.try_clone().map_err(|e| LaunchError::Other(QemuError::io("opening", &log, e).into()))?;

        let mut cmd =
            if spec.may_outlive { crate::process::killed_on_drop(&spec.binary) } else { guarded(&spec.binary) };
        cmd.args(["-name", &spec.name, "-accel", &spec.accel]);
        if spec.accel == "kvm" {
            cmd.args(["-cpu", "host"]);
        }
        cmd.args(["-m", &spec.memory_mib.to_string(), "-smp", &spec.cpus.to_string()])
            // Only the devices named here: less to emulate, and the same machine every time.
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-chardev")
            .arg(format!("file,id=console,append=on,path={}", escape(&console)))
            .args(["-serial", "chardev:console"])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2,discard=unmap,detect-zeroes=unmap", escape(&spec.disk)))
            .arg("-netdev")
            .arg(format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            // Entropy from the host: sshd and key generation do not stall on an idle emulated machine.
            .args(["-device", "virtio-rng-pci"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", escape(&qmp)));
        for (name, file) in &spec.fw_cfg {
            cmd.arg("-fw_cfg").arg(format!("name={name},file={}", escape(file)));
        }
        if let Some((kernel, initrd, append)) = &spec.kernel {
            cmd.arg("-kernel").arg(kernel);
            if let Some(i) = initrd {
                cmd.arg("-initrd").arg(i);
            }
            if let Some(a) = append {
                cmd.arg("-append").arg(a);
            }
        }
        cmd.args(&spec.extra_args).stdout(Stdio::from(log_file)).stderr(Stdio::from(log_file2));
        let line = describe(&cmd);
        let child = cmd.spawn().map_err(|e| {
            LaunchError::Other(if e.kind() == std::io::ErrorKind::NotFound {
                QemuError::NotInstalled { program: spec.binary.clone() }.into()
            } else {
                BuildError::new(ErrorKind::Platform, format!("cannot start `{line}`: {e}"))
            })
        })?;
        let pid = child.id().unwrap_or(0);
        let started = start_time(pid).unwrap_or(0);
        let mut machine = Machine { child, pid, started, port, qmp, console, log };
        on_spawn(pid, started).map_err(LaunchError::Other)?;

        // The monitor answers once QEMU has set everything up (disk opened, port bound).
        let wait = Wait::new(Duration::from_secs(30)).interval(Duration::from_millis(20), Duration::from_millis(500));
        let r = wait::until(&wait, "QEMU's monitor", || {
            let exited = machine.child.try_wait().ok().flatten();
            let qmp = machine.qmp.clone();
            async move {
                if let Some(status) = exited {
                    return Poll::Failed(status);
                }
                match qmp::execute(&qmp, "query-status", None, Duration::from_secs(2)).await {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(e.to_string()),
                }
            }
        })
        .await;
        match r {
            Ok(()) => Ok(machine),
            Err(WaitError::Failed(status)) => {
                let log = machine.log_tail(2000);
                let e = BuildError::new(
                    ErrorKind::Platform,
                    format!("QEMU exited at start ({status}): {log}\ncommand: {line}"),
                );
                if log.contains("host forwarding") || log.contains("hostfwd") {
                    Err(LaunchError::PortTaken(e))
                } else {
                    Err(LaunchError::Other(e))
                }
            }
            Err(WaitError::TimedOut { waited, last_state, .. }) => {
                machine.kill().await;
                Err(LaunchError::Other(BuildError::new(
                    ErrorKind::Timeout,
                    format!(
                        "QEMU's monitor did not answer within {waited:?} ({last_state}); QEMU log: {}",
                        machine.log_tail(2000)
                    ),
                )))
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process start time (see [`crate::process::start_time`]).
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The host port forwarded to the guest's port 22.
    pub fn ssh_port(&self) -> u16 {
        self.port
    }

    /// The QMP socket.
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp
    }

    /// The last `max` bytes of the guest's serial console.
    pub fn console_tail(&self, max: usize) -> String {
        tail(&self.console, max)
    }

    /// The last `max` bytes of QEMU's own output.
    pub fn log_tail(&self, max: usize) -> String {
        tail(&self.log, max)
    }

    /// Run a QMP command.
    pub async fn qmp(&self, command: &str) -> Result<serde_json::Value, QemuError> {
        qmp::execute(&self.qmp, command, None, QMP_TIMEOUT).await
    }

    /// Resolves when QEMU exits (not polled: the child's exit is awaited).
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown status ({e})"),
        }
    }

    /// Press the ACPI power button and wait up to `timeout` for the guest to power off. `Ok(true)`: it
    /// did; `Ok(false)`: it did not within `timeout` (QEMU still runs).
    pub async fn powerdown(&mut self, timeout: Duration) -> Result<bool, QemuError> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(true);
        }
        self.qmp("system_powerdown").await?;
        Ok(tokio::time::timeout(timeout, self.child.wait()).await.is_ok())
    }

    /// Stop QEMU at once and reap it.
    /// Leave the machine running for inspection: dropping this handle no longer kills it (its
    /// resources stay on the journal for `imgbake clean`).
    pub fn detach(self) {
        // tokio cannot turn kill-on-drop off once spawned; not dropping the handle does the same.
        std::mem::forget(self.child);
    }

    pub async fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

enum LaunchError {
    PortTaken(imgbake_core::error::BuildError),
    Other(imgbake_core::error::BuildError),
}

/// Reboots through QEMU's monitor (a hardware reset): works even when the guest no longer answers.
pub(crate) struct QmpReset {
    pub socket: PathBuf,
    pub pid: u32,
    /// QEMU's start time, so a recycled pid is not taken for it.
    pub started: u64,
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

/// Stop a journaled QEMU process: SIGTERM (QEMU exits at once, as on `quit`), then SIGKILL. A process
/// that is gone — or whose pid now belongs to another process — is success.
pub async fn stop_process(r: &Resource) -> Result<(), BuildError> {
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

/// The last `max` bytes of a text file, lossily decoded, trimmed.
pub fn tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}
