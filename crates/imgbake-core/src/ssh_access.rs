//! [`SshAccess`]: how an external SSH client (Ansible's `ssh`) reaches the build machine exactly the
//! way imgbake's own connection does — same address, login key and trusted host key — so a step that
//! hands the machine to another tool never weakens host key checking.

use std::path::PathBuf;

/// The settings of a communicator's SSH connection, for other SSH clients.
#[derive(Clone)]
pub struct SshAccess {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// The login key, if the connection logs in with one.
    pub identity: Option<SshIdentity>,
    /// The connection can log in with a password.
    pub password: bool,
    /// What the machine's host key is checked against.
    pub host_keys: SshHostKeys,
    /// The jump host the connection goes through.
    pub bastion: Option<Box<SshAccess>>,
}

/// A login key.
#[derive(Clone)]
pub enum SshIdentity {
    /// A private key file.
    File(PathBuf),
    /// A private key held in memory, in OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    OpenSsh(String),
}

/// How the host key is trusted.
#[derive(Clone, Debug, PartialEq)]
pub enum SshHostKeys {
    /// Exactly these keys (OpenSSH public key lines).
    Pinned(Vec<String>),
    /// An OpenSSH known_hosts file.
    KnownHosts(PathBuf),
    /// Any key (the `insecure` policy).
    Insecure,
}

impl std::fmt::Debug for SshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key.
        match self {
            SshIdentity::File(p) => write!(f, "File({})", p.display()),
            SshIdentity::OpenSsh(_) => f.write_str("OpenSsh(<in-memory key>)"),
        }
    }
}

impl std::fmt::Debug for SshAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshAccess")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("identity", &self.identity)
            .field("password", &self.password)
            .field("host_keys", &self.host_keys)
            .field("bastion", &self.bastion)
            .finish()
    }
}
