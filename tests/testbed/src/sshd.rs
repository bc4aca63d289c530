//! A private OpenSSH sshd (as root) on a free loopback port, with its own keys and config.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{BedError, Result, read_log_tail};
use crate::keys::{KeyKind, KeyPair, generate_key, shared_rsa_key};
use crate::poll::{Backoff, read_ssh_banner};
use crate::port::free_port;
use crate::process::{ChildGuard, descendants, kill_tree, spawn_guarded};
use crate::ssh_target::{SshTarget, known_hosts_line};

const SSHD: &str = "/usr/sbin/sshd";
const BIND_ATTEMPTS: usize = 5;

/// How to start sshd.
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// Offer the SFTP subsystem (`Subsystem sftp internal-sftp`). Default `true`.
    pub sftp: bool,
    /// Extra sshd_config lines, appended after the bed's own (e.g. `"MaxSessions 2"`).
    pub extra_config: Vec<String>,
    /// How long sshd may take to send its banner.
    pub start_timeout: Duration,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions { sftp: true, extra_config: Vec::new(), start_timeout: Duration::from_secs(15) }
    }
}

/// A running private sshd; root logs in with [`SshTarget::client_key_path`] (ed25519) or
/// [`Sshd::rsa_client_key_path`], and sessions see `HOME=`[`Sshd::home_dir`]. Killed with all
/// its sessions on drop.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    host_key: KeyPair,
    ed25519: KeyPair,
    rsa: KeyPair,
    known_hosts: PathBuf,
    options: SshdOptions,
    child: Option<ChildGuard>,
}

impl Sshd {
    /// Starts sshd with [`SshdOptions::default`].
    pub async fn start() -> Result<Sshd> {
        Sshd::start_with(SshdOptions::default()).await
    }

    /// Generates keys, writes the config and starts sshd on a free port; returns once sshd
    /// sends its banner.
    pub async fn start_with(options: SshdOptions) -> Result<Sshd> {
        if !Path::new(SSHD).is_file() {
            return Err(BedError::NotInstalled { what: "OpenSSH server (openssh-server)".into(), path: SSHD.into() });
        }
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            return Err(BedError::Invalid("the bed's sshd logs in as root and must be started by root".into()));
        }
        // Privilege separation directory; normally made by systemd's unit.
        std::fs::create_dir_all("/run/sshd").map_err(|e| BedError::io("creating /run/sshd", e))?;
        let dir = tempfile::Builder::new()
            .prefix("imgbake-sshd-")
            .tempdir()
            .map_err(|e| BedError::io("creating a temp dir for sshd", e))?;
        let host_key = generate_key(dir.path(), "ssh_host_ed25519_key", KeyKind::Ed25519).await?;
        let ed25519 = generate_key(dir.path(), "id_ed25519", KeyKind::Ed25519).await?;
        let rsa = shared_rsa_key(dir.path(), "id_rsa").await?;
        // Sessions get a clean HOME of their own: the host's root dotfiles (Debian's bash reads
        // ~/.bashrc for SSH commands) neither slow down nor change what tests run.
        std::fs::create_dir(dir.path().join("home")).map_err(|e| BedError::io("creating the sessions' home dir", e))?;
        let authorized = format!("{}\n{}\n", ed25519.public_key, rsa.public_key);
        write_file(&dir.path().join("authorized_keys"), &authorized)?;

        let mut sshd = Sshd {
            port: 0,
            known_hosts: dir.path().join("known_hosts"),
            dir,
            host_key,
            ed25519,
            rsa,
            options,
            child: None,
        };
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            sshd.port = free_port()?;
            sshd.write_config()?;
            let log = sshd.dir.path().join("sshd.log");
            // sshd -E appends: start each attempt with an empty log to judge it alone.
            write_file(&log, "")?;
            match sshd.launch().await {
                Ok(()) => return Ok(sshd),
                // Someone took the port between free_port() and sshd's bind: try another.
                Err(e) if sshd.log().contains("Address already in use") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| BedError::Invalid("sshd: no start attempt".into())))
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.path();
        let mut config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized}\n\
             PidFile {pid}\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             LogLevel VERBOSE\n\
             SetEnv HOME={home}\n",
            port = self.port,
            home = d.join("home").display(),
            host_key = self.host_key.private_key.display(),
            authorized = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        if self.options.sftp {
            config.push_str("Subsystem sftp internal-sftp\n");
        }
        for line in &self.options.extra_config {
            config.push_str(line);
            config.push('\n');
        }
        write_file(&d.join("sshd_config"), &config)?;
        let known = known_hosts_line("127.0.0.1", self.port, &self.host_key.public_key);
        write_file(&self.known_hosts, &format!("{known}\n"))
    }

    async fn launch(&mut self) -> Result<()> {
        let d = self.dir.path();
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let what = format!("sshd on 127.0.0.1:{}", self.port);
        let mut child = spawn_guarded(&what, cmd).await?;
        let addr = self.addr();
        let mut backoff = Backoff::new(self.options.start_timeout);
        loop {
            if let Some(status) = child.try_status()? {
                return Err(BedError::ExitedEarly {
                    what,
                    status: status.to_string(),
                    log: read_log_tail(&d.join("sshd.log"), 4000),
                });
            }
            let probe = backoff.remaining().min(Duration::from_secs(2));
            if read_ssh_banner(addr, probe).await.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if !backoff.wait().await {
                return Err(BedError::Timeout {
                    what,
                    after: self.options.start_timeout,
                    log: read_log_tail(&d.join("sshd.log"), 4000),
                });
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Client key pair of the given kind (both are authorized for root).
    pub fn client_key(&self, kind: KeyKind) -> &KeyPair {
        match kind {
            KeyKind::Ed25519 => &self.ed25519,
            KeyKind::Rsa => &self.rsa,
        }
    }

    /// Private RSA (3072) client key. Generated once per test process and shared by all
    /// [`Sshd`]s of it (RSA keygen is slow); the ed25519 client key is unique per server.
    pub fn rsa_client_key_path(&self) -> &Path {
        &self.rsa.private_key
    }

    /// Authorizes one more public key (OpenSSH line) for root; sshd reads the file per login.
    pub fn authorize_key(&self, public_key_line: &str) -> Result<()> {
        let path = self.dir.path().join("authorized_keys");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| BedError::io(format!("opening {}", path.display()), e))?;
        writeln!(file, "{}", public_key_line.trim())
            .map_err(|e| BedError::io(format!("appending to {}", path.display()), e))
    }

    /// The server's private temp dir (config, keys, log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `$HOME` of SSH sessions: an empty dir inside [`Sshd::dir`] (the working directory is
    /// still root's real home, as sshd sets it from the password database).
    pub fn home_dir(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// sshd's log so far (LogLevel VERBOSE: connections, auth, sessions).
    pub fn log(&self) -> String {
        std::fs::read(self.dir.path().join("sshd.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the listener is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_status(), Ok(None)),
            None => false,
        }
    }

    /// Process id of the listening sshd, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// Like a machine going down: kills the listener and every session process at once.
    /// Connections are then refused until [`Sshd::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts sshd again after [`Sshd::stop`], on the same port with the same keys.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(BedError::Invalid(format!("sshd on 127.0.0.1:{} is already running", self.port)));
        }
        self.launch().await
    }

    /// Kills every existing SSH connection (its sshd processes and sessions) but keeps the
    /// listener, so new connections work. Returns how many processes were killed.
    pub fn kill_sessions(&self) -> usize {
        let Some(child) = self.child.as_ref() else {
            return 0;
        };
        let count = descendants(child.pid()).len();
        kill_tree(child.pid() as libc::pid_t, false);
        count
    }
}

impl SshTarget for Sshd {
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
        &self.ed25519.private_key
    }
    fn host_public_key(&self) -> &str {
        &self.host_key.public_key
    }
    fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| BedError::io(format!("writing {}", path.display()), e))
}
