//! Real Vagrant (Debian's `vagrant` 2.3.4) run in isolation, for box-catalog tests.
//!
//! No provider is needed for `vagrant box add/list/outdated/update/remove`: those only fetch
//! the catalog, download the box, check its checksum and unpack it. Each [`Vagrant`] has its own
//! `VAGRANT_HOME` (installed boxes) and an empty working directory; Vagrant is told to look for a
//! Vagrantfile name that does not exist, because inside a project with a Vagrantfile every `box`
//! command fails here ("No usable default provider"). Output is never a TTY, so always pass
//! `--provider` to `box add`/`box update`. Mind that `vagrant box outdated --global` exits 0
//! even when it could not reach the catalog: check its text.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{BedError, Result, tail};
use crate::process::spawn_guarded;

/// Where Debian installs Vagrant.
const VAGRANT: &str = "/usr/bin/vagrant";

/// The Vagrant binary: `/usr/bin/vagrant`, else the first `vagrant` on `PATH`.
pub fn vagrant_binary() -> Option<PathBuf> {
    if Path::new(VAGRANT).is_file() {
        return Some(VAGRANT.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("vagrant")).find(|p| p.is_file())
}

/// What one `vagrant` run printed.
#[derive(Debug, Clone)]
pub struct VagrantOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (progress lines hold `\r` and `ESC[K`).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl VagrantOutput {
    /// Whether Vagrant exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Standard output then standard error: where to look for a message.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for VagrantOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` ({}):\n--- stdout\n{}\n--- stderr\n{}", self.command, self.status, self.stdout, self.stderr)
    }
}

/// An isolated Vagrant: its own `VAGRANT_HOME` and empty working directory, removed on drop.
#[derive(Debug)]
pub struct Vagrant {
    binary: PathBuf,
    dir: tempfile::TempDir,
    timeout: Duration,
    runs: AtomicU32,
}

impl Vagrant {
    /// Prepares an isolated Vagrant; every run is killed (with its `curl` children) after 120 s.
    pub fn new() -> Result<Vagrant> {
        let binary = vagrant_binary().ok_or_else(|| BedError::NotInstalled {
            what: "vagrant (Debian `vagrant`)".into(),
            path: VAGRANT.into(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("imgbake-vagrant-")
            .tempdir()
            .map_err(|e| BedError::io("creating a temp dir for vagrant", e))?;
        for sub in ["home", "cwd", "logs"] {
            std::fs::create_dir(dir.path().join(sub))
                .map_err(|e| BedError::io(format!("creating vagrant's {sub} dir"), e))?;
        }
        Ok(Vagrant { binary, dir, timeout: Duration::from_secs(120), runs: AtomicU32::new(0) })
    }

    /// The same, with another hard timeout per run.
    pub fn with_timeout(mut self, timeout: Duration) -> Vagrant {
        self.timeout = timeout;
        self
    }

    /// `VAGRANT_HOME`: installed boxes live under `home()/boxes`.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The (empty) working directory of every run.
    pub fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// Runs `vagrant ARGS` under the default hard timeout.
    pub async fn run(&self, args: &[&str]) -> Result<VagrantOutput> {
        self.run_with_timeout(args, self.timeout).await
    }

    /// Runs `vagrant ARGS`; after `timeout` its whole process group is killed and
    /// [`BedError::Timeout`] returned with the output so far. A non-zero exit is not an error
    /// here: check [`VagrantOutput::success`] and the text.
    pub async fn run_with_timeout(&self, args: &[&str], timeout: Duration) -> Result<VagrantOutput> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let logs = self.dir.path().join("logs");
        let out_path = logs.join(format!("{n}.stdout"));
        let err_path = logs.join(format!("{n}.stderr"));
        let open =
            |p: &Path| std::fs::File::create(p).map_err(|e| BedError::io(format!("creating {}", p.display()), e));
        let command_line = format!("vagrant {}", args.join(" "));

        let mut cmd = Command::new(&self.binary);
        cmd.args(args).current_dir(self.cwd());
        // Nothing of the caller's Vagrant setup leaks in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VAGRANT_") {
                cmd.env_remove(&key);
            }
        }
        let mut no_proxy = OsString::from("127.0.0.1,localhost");
        if let Some(old) = std::env::var_os("no_proxy").or_else(|| std::env::var_os("NO_PROXY")) {
            no_proxy.push(",");
            no_proxy.push(old);
        }
        cmd.env("VAGRANT_HOME", self.home())
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("VAGRANT_NO_COLOR", "1")
            // A name no directory has: no Vagrantfile of cwd or any parent is loaded.
            .env("VAGRANT_VAGRANTFILE", "Vagrantfile.imgbake-bed-none")
            .env("no_proxy", &no_proxy)
            .env("NO_PROXY", &no_proxy)
            .stdin(Stdio::null())
            .stdout(open(&out_path)?)
            .stderr(open(&err_path)?);
        let mut child = spawn_guarded(command_line.clone(), cmd).await?;
        let read = |p: &Path| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        match child.wait_exit(timeout).await {
            Ok(status) => {
                Ok(VagrantOutput { command: command_line, status, stdout: read(&out_path), stderr: read(&err_path) })
            }
            Err(BedError::Timeout { .. }) => {
                child.kill();
                Err(BedError::Timeout {
                    what: format!("`{command_line}` to finish (killed)"),
                    after: timeout,
                    log: format!("stdout: {}\nstderr: {}", tail(&read(&out_path), 3000), tail(&read(&err_path), 3000)),
                })
            }
            Err(e) => Err(e),
        }
    }
}
