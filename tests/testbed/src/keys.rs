//! SSH key pairs made with OpenSSH's `ssh-keygen`.

use std::path::{Path, PathBuf};

use crate::error::{BedError, Result};

/// Algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    /// RSA, 3072 bits.
    Rsa,
}

/// A key pair on disk: the private key in OpenSSH format (mode 0600, no passphrase).
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub kind: KeyKind,
    /// Private key file; the public key is next to it with `.pub` appended.
    pub private_key: PathBuf,
    /// The public key as an OpenSSH line (`ssh-ed25519 AAAA... comment`), no newline.
    pub public_key: String,
}

/// Generates a key pair at `dir/name` (and `dir/name.pub`) with `ssh-keygen`.
pub async fn generate_key(dir: &Path, name: &str, kind: KeyKind) -> Result<KeyPair> {
    let private_key = dir.join(name);
    let mut cmd = tokio::process::Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", "imgbake-testbed"]);
    match kind {
        KeyKind::Ed25519 => cmd.args(["-t", "ed25519"]),
        KeyKind::Rsa => cmd.args(["-t", "rsa", "-b", "3072"]),
    };
    cmd.arg("-f").arg(&private_key);
    let out = cmd.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BedError::NotInstalled {
                what: "ssh-keygen (openssh-client)".into(),
                path: "ssh-keygen".into(),
            }
        } else {
            BedError::io("running ssh-keygen", e)
        }
    })?;
    if !out.status.success() {
        return Err(BedError::Command {
            command: format!("ssh-keygen -t {kind:?} -f {}", private_key.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let pub_path = dir.join(format!("{name}.pub"));
    let public_key = tokio::fs::read_to_string(&pub_path)
        .await
        .map_err(|e| BedError::io(format!("reading {}", pub_path.display()), e))?
        .trim()
        .to_owned();
    Ok(KeyPair {
        kind,
        private_key,
        public_key,
    })
}

/// The key part of an OpenSSH public key line: `type base64`, without the comment.
pub fn public_key_without_comment(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
