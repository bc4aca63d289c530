//! The seed: a fresh login key and SSH host key per build, handed to the guest through QEMU's fw_cfg
//! (the base image's seed hook reads them at boot, see docs/builders/qemu.md) — and, next to it, what
//! the `sanitize` phase removes of it again before capture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::sanitize::SanitizeItems;

use crate::error::QemuError;

/// fw_cfg names the base image's seed hook reads (see docs/builders/qemu.md).
pub const SEED_AUTHORIZED_KEYS: &str = "opt/imgbake/authorized_keys";
/// fw_cfg name of the injected SSH host key.
pub const SEED_HOST_KEY: &str = "opt/imgbake/ssh_host_ed25519_key";

/// One build's keys, and the files QEMU hands to the guest.
pub(crate) struct Seed {
    /// The login key imgbake connects with.
    pub client_key: Arc<imgbake_ssh::PrivateKey>,
    /// Its public half (`ssh-ed25519 AAAA… comment`), the guest's authorized key.
    pub client_pub: String,
    /// The guest's host public key, pinned when connecting.
    pub host_pub: String,
    /// fw_cfg entries: name, file.
    pub fw_cfg: Vec<(String, PathBuf)>,
}

impl Seed {
    /// Generate the build's keys and write them, private (0600), into the build's work directory.
    pub fn write(work: &Path, build_id: &str) -> Result<Seed, BuildError> {
        let (client_key, client_pub) = imgbake_ssh::generate_ed25519(&format!("imgbake {build_id}"))?;
        let (host_key, host_pub) = imgbake_ssh::generate_ed25519("imgbake host key")?;
        let host_private = host_key
            .to_openssh(Default::default())
            .map_err(|e| BuildError::new(ErrorKind::Local, format!("cannot encode the host key: {e}")))?;
        let keys_file = work.join("authorized_keys");
        let host_file = work.join("ssh_host_ed25519_key");
        write_private(&keys_file, format!("{client_pub}\n").as_bytes())?;
        write_private(&host_file, host_private.as_bytes())?;
        Ok(Seed {
            client_key,
            client_pub,
            host_pub,
            fw_cfg: vec![(SEED_AUTHORIZED_KEYS.into(), keys_file), (SEED_HOST_KEY.into(), host_file)],
        })
    }

    /// What the seed put on the guest, for the `sanitize` phase.
    pub fn sanitize_items(&self) -> SanitizeItems {
        seed_sanitize_items(&self.host_pub, &self.client_pub)
    }
}

/// What the seed put on the guest for this build, for the `sanitize` phase: the base image's seed hook
/// installs the host key and the login key under /run/imgbake (a tmpfs, but a step may have copied
/// them to disk, and a base image of one's own may keep them elsewhere).
pub fn seed_sanitize_items(host_pub: &str, client_pub: &str) -> SanitizeItems {
    SanitizeItems {
        host_public_key: Some(host_pub.to_string()),
        host_key_files: vec!["/run/imgbake/ssh_host_ed25519_key".into()],
        authorized_keys: vec![client_pub.to_string()],
        files: vec!["/run/imgbake/authorized_keys/root".into(), "/run/imgbake/sshd.conf".into()],
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| QemuError::io("creating", path, e))?;
    f.write_all(data).map_err(|e| QemuError::io("writing", path, e).into())
}
