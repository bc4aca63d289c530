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
            BedError::NotInstalled { what: "ssh-keygen (openssh-client)".into(), path: "ssh-keygen".into() }
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
    Ok(KeyPair { kind, private_key, public_key })
}

/// The key part of an OpenSSH public key line: `type base64`, without the comment.
pub fn public_key_without_comment(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// An RSA key pair at `dir/name`, generated once per process and copied for every caller:
/// RSA keygen takes up to a second, ed25519 a few milliseconds.
pub(crate) async fn shared_rsa_key(dir: &Path, name: &str) -> Result<KeyPair> {
    static RSA: tokio::sync::OnceCell<(String, String)> = tokio::sync::OnceCell::const_new();
    let (private, public) = RSA
        .get_or_try_init(|| async {
            let tmp = tempfile::Builder::new()
                .prefix("imgbake-rsa-")
                .tempdir()
                .map_err(|e| BedError::io("creating a temp dir for the RSA key", e))?;
            let pair = generate_key(tmp.path(), "id_rsa", KeyKind::Rsa).await?;
            let private = std::fs::read_to_string(&pair.private_key)
                .map_err(|e| BedError::io(format!("reading {}", pair.private_key.display()), e))?;
            Ok::<_, BedError>((private, pair.public_key))
        })
        .await?;
    let private_key = dir.join(name);
    write_private(&private_key, private)?;
    let pub_path = dir.join(format!("{name}.pub"));
    std::fs::write(&pub_path, format!("{public}\n"))
        .map_err(|e| BedError::io(format!("writing {}", pub_path.display()), e))?;
    Ok(KeyPair { kind: KeyKind::Rsa, private_key, public_key: public.clone() })
}

/// Writes a private key readable by its owner only (ssh refuses keys others can read).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BedError::io(format!("creating {}", path.display()), e))?;
    file.write_all(text.as_bytes()).map_err(|e| BedError::io(format!("writing {}", path.display()), e))
}
