//! The [`Communicator`] trait: how imgbake talks to a machine being built.
//!
//! SSH is the one implementation today (`imgbake-ssh`); the trait is small enough for WinRM or a
//! hypervisor's guest-operations API later. Everything above it — provisioning steps, reboot
//! handling, on-box tests — is written against this trait only, so every builder gets them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use imgbake_config::Os;

use crate::event::EventSink;
use crate::wait::Wait;

/// A machine's boot identity: a value that is constant while it runs and changes at every boot
/// (Linux `/proc/sys/kernel/random/boot_id`, Windows' last boot time).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BootIdentity(pub String);

impl std::fmt::Display for BootIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command to run on the machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecRequest {
    /// The command, in the machine's shell language (`sh` on Linux, PowerShell on Windows).
    pub command: String,
    /// Environment variables for the command.
    pub env: Vec<(String, String)>,
    /// Directory to run it in.
    pub workdir: Option<String>,
    /// A template wrapping the command, e.g. `sudo -n sh -c {{quote command}}`; see
    /// [`crate::command::compose`] for its variables. `None` uses the OS default.
    pub execute_command: Option<String>,
    /// Kill the command (and report [`CommError::Timeout`]) after this long.
    pub timeout: Option<Duration>,
    /// Keep stdout and stderr in the [`ExecOutput`] as well as streaming them as events.
    pub capture: bool,
    /// Do not stream output lines as events (for internal probes like reading the boot identity).
    pub quiet: bool,
}

impl ExecRequest {
    /// A plain command, streamed, not captured.
    pub fn new(command: impl Into<String>) -> Self {
        ExecRequest { command: command.into(), ..Default::default() }
    }

    /// The same request, with output captured and not streamed.
    pub fn captured(mut self) -> Self {
        self.capture = true;
        self.quiet = true;
        self
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(String),
    /// The connection was lost before an exit status arrived (the machine may be rebooting).
    ConnectionLost,
}

impl ExecStatus {
    /// `true` for `Exited(0)`.
    pub fn success(&self) -> bool {
        matches!(self, ExecStatus::Exited(0))
    }
}

impl std::fmt::Display for ExecStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecStatus::Exited(c) => write!(f, "exited with {c}"),
            ExecStatus::Signaled(s) => write!(f, "killed by signal {s}"),
            ExecStatus::ConnectionLost => f.write_str("connection lost without an exit status"),
        }
    }
}

/// What a command left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// How it ended.
    pub status: ExecStatus,
    /// Its standard output, when captured.
    pub stdout: Vec<u8>,
    /// Its standard error, when captured.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Captured stdout as text, trimmed.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_string()
    }
}

/// Errors of communicators. Shared by all implementations so the layers above can react to them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommError {
    /// The machine is not reachable yet (connection refused, reset, no banner): worth retrying.
    #[error("{target} is not up yet: {reason}")]
    NotUp {
        /// Who.
        target: String,
        /// What happened.
        reason: String,
    },
    /// Waiting for the machine to accept connections took too long.
    #[error("could not connect to {target} within {waited:?}; last error: {last_error}")]
    ConnectTimeout {
        /// Who.
        target: String,
        /// How long it tried.
        waited: Duration,
        /// The last failure seen.
        last_error: String,
    },
    /// The server refused our credentials.
    #[error("authentication as {user} on {target} failed: {reason}")]
    Auth {
        /// Who.
        target: String,
        /// The user name.
        user: String,
        /// Details (which methods were tried).
        reason: String,
    },
    /// The server presented a host key that does not match the one expected.
    #[error("host key of {target} does not match: expected {expected}, server presented {presented}")]
    HostKeyMismatch {
        /// Who.
        target: String,
        /// The expected key (fingerprint or OpenSSH line).
        expected: String,
        /// What the server presented.
        presented: String,
    },
    /// The host key could not be verified (not in known_hosts and no pinned key).
    #[error(
        "host key of {target} is unknown ({presented}); pin it, add it to known_hosts, or opt in to insecure host key checking"
    )]
    UnknownHostKey {
        /// Who.
        target: String,
        /// What the server presented.
        presented: String,
    },
    /// The connection broke.
    #[error("connection to {target} lost: {reason}")]
    Disconnected {
        /// Who.
        target: String,
        /// Why, as far as known.
        reason: String,
    },
    /// An operation took longer than allowed.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// A remote file operation failed.
    #[error("remote file {path}: {reason}")]
    RemoteFile {
        /// The remote path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A local file operation failed.
    #[error("local file {}: {source}", path.display())]
    LocalFile {
        /// The local path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The command could not be built (bad `execute_command` template...).
    #[error("cannot build the command: {0}")]
    Command(String),
    /// Any other protocol failure.
    #[error("{target}: {reason}")]
    Protocol {
        /// Who.
        target: String,
        /// What.
        reason: String,
    },
}

impl CommError {
    /// `true` when the machine may simply not be up (yet or again): a reconnect loop keeps trying.
    pub fn is_not_up(&self) -> bool {
        matches!(self, CommError::NotUp { .. } | CommError::Disconnected { .. })
    }
}

/// How the communicator talks to one machine.
#[async_trait]
pub trait Communicator: Send + Sync {
    /// Who we talk to, for messages (`admin@127.0.0.1:2222`).
    fn target(&self) -> String;

    /// The machine's OS family.
    fn os(&self) -> Os;

    /// Connect, retrying "not up yet" failures with backoff until `wait.timeout`. Returns at once when
    /// already connected. Authentication and host-key failures are final.
    async fn connect(&self, wait: &Wait) -> Result<(), CommError>;

    /// Drop the connection (the next operation needs [`Communicator::connect`] again).
    async fn disconnect(&self);

    /// Run a command; stdout/stderr lines stream to `events` unless `req.quiet`.
    async fn exec(&self, req: &ExecRequest, events: &EventSink) -> Result<ExecOutput, CommError>;

    /// Upload a local file or directory (recursively) to `remote`, keeping file modes. Returns bytes sent.
    async fn upload(&self, local: &Path, remote: &str, events: &EventSink) -> Result<u64, CommError>;

    /// Write `data` to the remote file `remote` with `mode`.
    async fn upload_bytes(&self, data: &[u8], remote: &str, mode: u32) -> Result<(), CommError>;

    /// Download a remote file or directory (recursively) to `local`, keeping modes. Returns bytes received.
    async fn download(&self, remote: &str, local: &Path, events: &EventSink) -> Result<u64, CommError>;

    /// The connection's SSH settings, for steps that run another SSH client against the machine
    /// (`ansible`). `None` (the default): this communicator does not talk SSH.
    fn ssh_access(&self) -> Option<crate::ssh_access::SshAccess> {
        None
    }

    /// The command that prints the boot identity (a configured one, else the OS default).
    fn boot_identity_command(&self) -> String {
        crate::command::default_boot_identity_command(self.os()).to_string()
    }

    /// Read the machine's boot identity.
    async fn boot_identity(&self) -> Result<BootIdentity, CommError> {
        let req = ExecRequest::new(self.boot_identity_command()).captured();
        let out = self.exec(&req, &EventSink::discard()).await?;
        match out.status {
            ExecStatus::Exited(0) if !out.stdout_text().is_empty() => Ok(BootIdentity(out.stdout_text())),
            ExecStatus::ConnectionLost => Err(CommError::Disconnected {
                target: self.target(),
                reason: "lost while reading the boot identity".into(),
            }),
            ref status => Err(CommError::Protocol {
                target: self.target(),
                reason: format!(
                    "boot identity command `{}` {status} and printed {:?}; stderr: {}",
                    req.command,
                    out.stdout_text(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
        }
    }
}
