//! The rebooting test machine: the bed's tiny Linux guest under QEMU/TCG, SSH (dropbear) on a
//! forwarded loopback port, a persistent state disk, and a QMP socket to freeze or reset it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::error::{BedError, Result, read_log_tail};
use crate::keys::{KeyKind, KeyPair, generate_key};
use crate::paths::{guest_dir, guest_kernel};
use crate::poll::Backoff;
use crate::port::free_port;
use crate::process::{ChildGuard, spawn_guarded};
use crate::ssh_target::{SshTarget, known_hosts_line, ssh_output};
use crate::state_disk::{self, RebootChain};

const QEMU: &str = "qemu-system-x86_64";
const BIND_ATTEMPTS: usize = 5;
/// x86 COMMAND_LINE_SIZE is 2048 including the NUL.
const MAX_CMDLINE: usize = 2047;

/// The guest's network card (both drivers are in the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nic {
    /// virtio-net-pci: link up at once; boots ~2.5 s faster than e1000 under TCG.
    #[default]
    VirtioNet,
    /// Intel e1000, the classic emulated card (link comes up ~2 s after the driver loads).
    E1000,
}

impl Nic {
    fn qemu_device(self) -> &'static str {
        match self {
            Nic::VirtioNet => "virtio-net-pci",
            Nic::E1000 => "e1000",
        }
    }
}

/// How to start the guest.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    /// Guest memory (default 256 MiB).
    pub memory_mib: u32,
    /// Network card (default virtio-net).
    pub nic: Nic,
    /// More public keys (OpenSSH lines) root accepts, besides the generated client key. They
    /// travel on the kernel command line, which holds ~2 KiB: an ed25519 key fits easily, an
    /// RSA-3072 key once.
    pub extra_authorized_keys: Vec<String>,
    /// Reboots the guest does by itself right from its first boot (written to a fresh state
    /// disk before QEMU starts). Default: none.
    pub reboot_chain: RebootChain,
    /// Use this state disk (created if missing, kept after drop) instead of a fresh one in the
    /// guest's temp dir: state then survives across guests.
    pub state_disk: Option<PathBuf>,
    /// More QEMU arguments, appended last.
    pub extra_qemu_args: Vec<String>,
    /// How long QEMU may take to answer QMP (not the boot: see [`QemuGuest::wait_ssh_banner`]).
    pub start_timeout: Duration,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            memory_mib: 256,
            nic: Nic::default(),
            extra_authorized_keys: Vec::new(),
            reboot_chain: RebootChain::default(),
            state_disk: None,
            extra_qemu_args: Vec::new(),
            start_timeout: Duration::from_secs(20),
        }
    }
}

/// A running QEMU guest. [`QemuGuest::start`] returns as soon as QEMU runs (the guest is still
/// booting): wait with [`QemuGuest::wait_ssh_banner`]. Drop kills QEMU and removes its files.
#[derive(Debug)]
pub struct QemuGuest {
    dir: tempfile::TempDir,
    guest_dir: PathBuf,
    port: u16,
    host_key: KeyPair,
    client_key: KeyPair,
    known_hosts: PathBuf,
    state_disk: PathBuf,
    cmdline: String,
    options: GuestOptions,
    child: Option<ChildGuard>,
    qmp_lock: tokio::sync::Mutex<()>,
}

impl QemuGuest {
    /// Boots the cached guest (built by tests/bed/install.sh) with fresh keys on a free port.
    pub async fn start(options: GuestOptions) -> Result<QemuGuest> {
        let guest_dir = guest_dir().await?;
        let dir = tempfile::Builder::new()
            .prefix("imgbake-qemu-")
            .tempdir()
            .map_err(|e| BedError::io("creating a temp dir for the QEMU guest", e))?;
        let host_key = generate_key(dir.path(), "ssh_host_ed25519_key", KeyKind::Ed25519).await?;
        let client_key = generate_key(dir.path(), "id_ed25519", KeyKind::Ed25519).await?;
        let state_disk = match &options.state_disk {
            Some(path) => {
                if !path.exists() {
                    state_disk::create(path, options.reboot_chain)?;
                }
                path.clone()
            }
            None => {
                let path = dir.path().join("state.img");
                state_disk::create(&path, options.reboot_chain)?;
                path
            }
        };
        let cmdline = kernel_cmdline(&host_key, &client_key, &options.extra_authorized_keys)?;
        let mut guest = QemuGuest {
            known_hosts: dir.path().join("known_hosts"),
            dir,
            guest_dir,
            port: 0,
            host_key,
            client_key,
            state_disk,
            cmdline,
            options,
            child: None,
            qmp_lock: tokio::sync::Mutex::new(()),
        };
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            guest.port = free_port()?;
            let known = known_hosts_line("127.0.0.1", guest.port, &guest.host_key.public_key);
            std::fs::write(&guest.known_hosts, format!("{known}\n"))
                .map_err(|e| BedError::io(format!("writing {}", guest.known_hosts.display()), e))?;
            match guest.launch().await {
                Ok(()) => return Ok(guest),
                // Someone took the port between free_port() and QEMU's bind: try another.
                Err(e) if guest.qemu_log().contains("host forwarding") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| BedError::Invalid("qemu: no start attempt".into())))
    }

    fn qmp_socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    async fn launch(&mut self) -> Result<()> {
        let d = self.dir.path();
        let qmp = self.qmp_socket();
        let _ = std::fs::remove_file(&qmp);
        let log_path = d.join("qemu.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| BedError::io(format!("creating {}", log_path.display()), e))?;
        let log2 = log.try_clone().map_err(|e| BedError::io(format!("opening {}", log_path.display()), e))?;
        let mut cmd = Command::new(QEMU);
        cmd.args(["-accel", "tcg", "-m", &self.options.memory_mib.to_string()])
            // Only the devices we name: less to emulate, faster boots.
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-chardev")
            .arg(format!("file,id=console,append=on,path={}", qemu_escape(&d.join("console.log"))))
            .args(["-serial", "chardev:console"])
            .arg("-kernel")
            .arg(guest_kernel(&self.guest_dir))
            .arg("-initrd")
            .arg(self.guest_dir.join("initrd.img"))
            .arg("-append")
            .arg(&self.cmdline)
            .arg("-netdev")
            .arg(format!("user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22", self.port))
            .arg("-device")
            .arg(format!("{},netdev=n", self.options.nic.qemu_device()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", qemu_escape(&self.state_disk)))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qemu_escape(&qmp)))
            .args(&self.options.extra_qemu_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let what = format!("QEMU guest (ssh on 127.0.0.1:{})", self.port);
        let mut child = match spawn_guarded(&what, cmd).await {
            Err(BedError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(BedError::NotInstalled { what: "QEMU (qemu-system-x86)".into(), path: QEMU.into() });
            }
            other => other?,
        };
        let mut backoff = Backoff::new(self.options.start_timeout);
        loop {
            if let Some(status) = child.try_status()? {
                return Err(BedError::ExitedEarly {
                    what,
                    status: status.to_string(),
                    log: read_log_tail(&log_path, 4000),
                });
            }
            let probe = backoff.remaining().min(Duration::from_secs(2));
            if crate::qmp::execute(&qmp, "query-status", None, probe).await.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if !backoff.wait().await {
                return Err(BedError::Timeout {
                    what,
                    after: self.options.start_timeout,
                    log: read_log_tail(&log_path, 4000),
                });
            }
        }
    }

    /// Host port forwarded to the guest's SSH port 22 (same as [`SshTarget::port`]).
    pub fn ssh_port(&self) -> u16 {
        self.port
    }

    /// Process id of QEMU, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// Whether QEMU is running (the guest itself may be frozen or rebooting).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_status(), Ok(None)),
            None => false,
        }
    }

    /// Polls until the guest's SSH server sends its banner (a TCP connect alone proves nothing:
    /// QEMU accepts on the forwarded port even while the guest is down or frozen). Returns the
    /// banner line.
    pub async fn wait_ssh_banner(&self, timeout: Duration) -> Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        crate::poll::wait_ssh_banner(addr, timeout).await.map_err(|e| match e {
            BedError::Timeout { what, after, .. } => BedError::Timeout {
                what: format!("{what} (QEMU guest)"),
                after,
                log: crate::error::tail(&self.console_log(), 3000),
            },
            other => other,
        })
    }

    /// Runs a QMP command without arguments (`stop`, `cont`, `system_reset`, `quit`,
    /// `query-status`, ...) and returns its `return` value.
    pub async fn qmp(&self, command: &str) -> Result<Value> {
        self.qmp_with(command, None).await
    }

    /// Runs a QMP command with arguments.
    pub async fn qmp_with(&self, command: &str, arguments: Option<Value>) -> Result<Value> {
        // QEMU serves one QMP client at a time.
        let _one_at_a_time = self.qmp_lock.lock().await;
        crate::qmp::execute(&self.qmp_socket(), command, arguments, Duration::from_secs(10)).await
    }

    /// The guest's current boot id, over SSH.
    pub async fn boot_id(&self) -> Result<String> {
        let out = ssh_output(self, "cat /proc/sys/kernel/random/boot_id").await?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || id.len() != 36 {
            return Err(BedError::Command {
                command: format!("ssh -p {} root@127.0.0.1 cat .../boot_id", self.port),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(id)
    }

    /// Boot ids the guest recorded on its state disk, one per boot, oldest first (read from
    /// the host side, so it works while the guest is down).
    pub fn boot_log(&self) -> Result<Vec<String>> {
        state_disk::boot_log(&self.state_disk)
    }

    /// Arms a reboot chain for the guest's next boot: once SSH is up on it, the guest reboots
    /// `chain.reboots` more times, each `chain.delay_secs` after SSH came up (a machine that
    /// reboots again on its own after a reboot, like an update chain).
    pub fn arm_reboot_chain(&self, chain: RebootChain) -> Result<()> {
        state_disk::arm(&self.state_disk, chain)
    }

    /// Reboots of a reboot chain still to come.
    pub fn pending_reboots(&self) -> Result<u32> {
        state_disk::pending_reboots(&self.state_disk)
    }

    /// The state disk image (raw).
    pub fn state_disk_path(&self) -> &Path {
        &self.state_disk
    }

    /// The guest's serial console so far (kernel, init and dropbear messages), over restarts.
    pub fn console_log(&self) -> String {
        read_text(&self.dir.path().join("console.log"))
    }

    /// QEMU's own stdout/stderr of the current process.
    pub fn qemu_log(&self) -> String {
        read_text(&self.dir.path().join("qemu.log"))
    }

    /// The guest's private temp dir (keys, logs, QMP socket); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills QEMU at once (power cut). Keys, port and state disk stay for [`Self::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts QEMU again after [`Self::kill`] or `quit` (power on): same port, keys, disk.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(BedError::Invalid(format!("the QEMU guest on 127.0.0.1:{} is still running", self.port)));
        }
        self.kill();
        self.launch().await
    }
}

impl SshTarget for QemuGuest {
    fn host(&self) -> &str {
        "127.0.0.1"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn user(&self) -> &str {
        "root"
    }
    fn client_key_path(&self) -> &Path {
        &self.client_key.private_key
    }
    fn host_public_key(&self) -> &str {
        &self.host_key.public_key
    }
    fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kernel command line carrying the SSH settings the guest's init reads.
fn kernel_cmdline(host_key: &KeyPair, client: &KeyPair, extra_keys: &[String]) -> Result<String> {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let private = std::fs::read_to_string(&host_key.private_key)
        .map_err(|e| BedError::io(format!("reading {}", host_key.private_key.display()), e))?;
    let mut cmdline = format!(
        "console=ttyS0 quiet imgbake.host_key={} imgbake.authorized_key={}",
        b64(&private),
        b64(&client.public_key)
    );
    for key in extra_keys {
        cmdline.push_str(" imgbake.authorized_key=");
        cmdline.push_str(&b64(key.trim()));
    }
    if cmdline.len() > MAX_CMDLINE {
        return Err(BedError::Invalid(format!(
            "the guest's kernel command line would be {} bytes (max {MAX_CMDLINE}): \
             pass fewer or shorter extra_authorized_keys (ed25519 keys are ~140 bytes)",
            cmdline.len()
        )));
    }
    Ok(cmdline)
}

/// QEMU option values separate with commas; a literal comma is written twice.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

fn read_text(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}
