//! imgbake's SSH communicator, on russh: exec with output streamed line by line, SFTP transfers (with
//! an exec fallback for servers without SFTP), keepalives that notice a dead peer within seconds,
//! connection retries that treat "refused", "no banner" and handshake resets as "not up yet", host key
//! pinning, known_hosts, jump hosts.
//!
//! Reboot handling is generic over any communicator and lives in `imgbake_core::reboot`.
//!
//! See [`SshCommunicator`] for an example and [`SshConfig`] for every setting.

mod archive;
mod communicator;
mod config;
mod exec;
mod fallback;
mod hostkey;
mod progress;
mod session;
mod sftp;
pub mod spec;
mod tree;

pub use communicator::SshCommunicator;
pub use config::{Auth, DEFAULT_CIPHERS, HostKeyPolicy, SshConfig};
pub use hostkey::{describe_key, parse_public_key};
pub use russh::keys::ssh_key::LineEnding;
pub use russh::keys::{PrivateKey, PublicKey};

/// A fresh ed25519 key pair, for a build that injects its own key into the machine (cloud key pairs,
/// user data). Returns the private key (for [`Auth::Key`]) and its OpenSSH public key line.
pub fn generate_ed25519(
    comment: &str,
) -> Result<(std::sync::Arc<PrivateKey>, String), imgbake_core::communicator::CommError> {
    let mut rng = russh::keys::key::safe_rng();
    let mut key = PrivateKey::random(&mut rng, russh::keys::Algorithm::Ed25519)
        .map_err(|e| imgbake_core::communicator::CommError::Command(format!("cannot generate an ed25519 key: {e}")))?;
    key.set_comment(comment);
    let line = key
        .public_key()
        .to_openssh()
        .map_err(|e| imgbake_core::communicator::CommError::Command(format!("cannot encode the public key: {e}")))?;
    Ok((std::sync::Arc::new(key), line))
}
