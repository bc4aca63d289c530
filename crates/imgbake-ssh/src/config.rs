//! How to reach a machine over SSH: [`SshConfig`] and its parts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imgbake_config::Os;
use russh::keys::PrivateKey;

/// One way to authenticate. [`SshConfig::auth`] lists them; they are tried in order until one works.
#[derive(Clone)]
pub enum Auth {
    /// A private key file in OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`) or PEM format: ed25519,
    /// ECDSA or RSA. `passphrase` decrypts an encrypted key.
    KeyFile {
        /// Path of the private key.
        path: PathBuf,
        /// Passphrase of an encrypted key.
        passphrase: Option<String>,
    },
    /// A private key held in memory (for example one generated for this build with
    /// [`crate::generate_ed25519`]).
    Key(Arc<PrivateKey>),
    /// A password (`password` authentication method).
    Password(String),
}

impl Auth {
    /// A key file without passphrase.
    pub fn key_file(path: impl Into<PathBuf>) -> Self {
        Auth::KeyFile { path: path.into(), passphrase: None }
    }

    /// What this method is, for messages (never the secret itself).
    pub fn describe(&self) -> String {
        match self {
            Auth::KeyFile { path, .. } => format!("key file {}", path.display()),
            Auth::Key(k) => format!(
                "in-memory {} key {}",
                k.algorithm().as_str(),
                k.public_key().fingerprint(russh::keys::HashAlg::Sha256)
            ),
            Auth::Password(_) => "password".to_string(),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password or a private key.
        f.write_str(&self.describe())
    }
}

/// How the server's host key is verified.
#[derive(Clone, Debug, PartialEq)]
pub enum HostKeyPolicy {
    /// Accept only these keys, each an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`).
    /// The builder usually knows the key in advance because it generated and injected it.
    Pinned(Vec<String>),
    /// Look the host up in an OpenSSH `known_hosts` file (plain or hashed names, `[host]:port` for
    /// other ports than 22, wildcards, `@revoked`). A host that is not listed is rejected.
    KnownHosts(PathBuf),
    /// Accept any key. Insecure (a man in the middle goes unnoticed): every connection emits a warning
    /// event naming the key it accepted. Only for throwaway machines on networks you trust.
    InsecureAcceptAny,
}

impl Default for HostKeyPolicy {
    /// The user's `~/.ssh/known_hosts`, like OpenSSH; never "accept anything".
    fn default() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        HostKeyPolicy::KnownHosts(home.join(".ssh").join("known_hosts"))
    }
}

/// Everything needed to reach one machine.
#[derive(Clone, Debug)]
pub struct SshConfig {
    /// Host name or IP address of the machine.
    pub host: String,
    /// SSH port. Default 22.
    pub port: u16,
    /// User to log in as. Default `root`.
    pub user: String,
    /// Authentication methods, tried in order until one succeeds. Default: none (connecting fails with
    /// a message saying so).
    pub auth: Vec<Auth>,
    /// How the host key is verified. Default: `~/.ssh/known_hosts`.
    pub host_key: HostKeyPolicy,
    /// Reach the machine through this jump host (like `ssh -J`): the connection is tunnelled through a
    /// `direct-tcpip` channel of a session to the bastion, which has its own settings and host key.
    pub bastion: Option<Box<SshConfig>>,
    /// Limit for one connection attempt: TCP connect, banner, key exchange and authentication.
    /// Default 20 s (slow links and loaded servers).
    pub connect_timeout: Duration,
    /// Keep retrying authentication failures this long after the first one. On a cloud machine's first
    /// boot sshd can answer before cloud-init has installed the login key, so a rejected key there means
    /// "not yet"; a key that is still rejected after the grace period is final, with the usual message.
    /// Default 0 (a rejected key is final at once); builders set it for freshly launched machines.
    pub auth_grace: Duration,
    /// Limit for TCP connect plus the server's SSH banner. A live server answers within moments; a
    /// machine that is down drops connection attempts (the TCP connect hangs) or sits behind a port
    /// forward that accepts TCP and then says nothing (QEMU user networking). Such an attempt counts as
    /// "not up yet" after this long. While attempts hang, new ones start in parallel (up to 4) at the
    /// pace of the connect wait, so a machine coming back is noticed within one poll interval, not one
    /// banner timeout. Default 2 s.
    pub banner_timeout: Duration,
    /// Send a keepalive when the server has been silent this long. Default 2 s.
    pub keepalive_interval: Duration,
    /// Declare the connection dead after this many unanswered keepalives. With the defaults a frozen or
    /// vanished peer is noticed within about 8 s (interval × (max + 1)). Default 3.
    pub keepalive_max: usize,
    /// Command printing the machine's boot identity; `None` uses the OS default
    /// (`/proc/sys/kernel/random/boot_id` on Linux, the last boot time on Windows).
    pub boot_identity_command: Option<String>,
    /// The machine's OS family: picks the shell wrapping of commands and default commands.
    pub os: Os,
    /// Preferred ciphers, best first (OpenSSH names). The default puts AES-GCM first: with AES-NI it is
    /// the fastest for transfers; chacha20-poly1305 and AES-CTR follow for servers without GCM.
    pub ciphers: Vec<String>,
    /// SFTP tuning: largest SFTP packet sent or asked for, in bytes. Default 256 KiB, OpenSSH
    /// sftp-server's limit (a server announcing smaller limits is respected); bigger requests mean fewer
    /// round trips than the usual 32 KiB.
    pub sftp_packet_len: u32,
    /// SFTP tuning: write (and read) requests kept in flight per file. Default 32.
    pub sftp_requests_in_flight: usize,
    /// Upload directories of many files (32 entries or more) to Linux machines as one tar stream
    /// unpacked by the machine's GNU tar or bsdtar (modes, links; owner: the login user), which
    /// is several times faster than file-by-file SFTP. Machines without such a tar get SFTP.
    /// Default true.
    pub archive_uploads: bool,
}

/// The cipher order used when [`SshConfig::ciphers`] is left at its default.
pub const DEFAULT_CIPHERS: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            host: "127.0.0.1".into(),
            port: 22,
            user: "root".into(),
            auth: Vec::new(),
            host_key: HostKeyPolicy::default(),
            bastion: None,
            auth_grace: Duration::ZERO,
            connect_timeout: Duration::from_secs(20),
            banner_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(2),
            keepalive_max: 3,
            boot_identity_command: None,
            os: Os::Linux,
            ciphers: DEFAULT_CIPHERS.iter().map(|s| s.to_string()).collect(),
            sftp_packet_len: 256 * 1024,
            sftp_requests_in_flight: 32,
            archive_uploads: true,
        }
    }
}

impl SshConfig {
    /// Settings for `user@host:port` with the defaults for everything else.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        SshConfig { host: host.into(), port, user: user.into(), ..SshConfig::default() }
    }

    /// Add an authentication method.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth.push(auth);
        self
    }

    /// Set the host key policy.
    pub fn with_host_key(mut self, policy: HostKeyPolicy) -> Self {
        self.host_key = policy;
        self
    }

    /// `user@host:port`, for messages.
    pub fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// The settings other SSH clients need to reach the machine as this configuration does: the first
/// key login (an in-memory key in OpenSSH format), the host key policy, the bastion.
pub(crate) fn access(c: &SshConfig) -> imgbake_core::ssh_access::SshAccess {
    use imgbake_core::ssh_access::{SshAccess, SshHostKeys, SshIdentity};
    let identity = c.auth.iter().find_map(|a| match a {
        Auth::KeyFile { path, .. } => Some(SshIdentity::File(path.clone())),
        // An encoding failure leaves no key: the caller then says the connection has none it can use.
        Auth::Key(k) => {
            k.to_openssh(russh::keys::ssh_key::LineEnding::LF).ok().map(|s| SshIdentity::OpenSsh(s.to_string()))
        }
        Auth::Password(_) => None,
    });
    SshAccess {
        host: c.host.clone(),
        port: c.port,
        user: c.user.clone(),
        identity,
        password: c.auth.iter().any(|a| matches!(a, Auth::Password(_))),
        host_keys: match &c.host_key {
            HostKeyPolicy::Pinned(k) => SshHostKeys::Pinned(k.clone()),
            HostKeyPolicy::KnownHosts(p) => SshHostKeys::KnownHosts(p.clone()),
            HostKeyPolicy::InsecureAcceptAny => SshHostKeys::Insecure,
        },
        bastion: c.bastion.as_ref().map(|b| Box::new(access(b))),
    }
}
