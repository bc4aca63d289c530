//! What a test needs to reach an SSH server of the bed, and the OpenSSH client command for it.

use std::path::Path;

use crate::error::{BedError, Result};

/// An SSH server of the bed ([`crate::Sshd`], [`crate::QemuGuest`]) with its pinned host key.
pub trait SshTarget {
    /// Address to connect to (always loopback).
    fn host(&self) -> &str;
    /// TCP port.
    fn port(&self) -> u16;
    /// Login user ("root").
    fn user(&self) -> &str;
    /// Private key (OpenSSH format, ed25519) the server accepts for [`SshTarget::user`].
    fn client_key_path(&self) -> &Path;
    /// The server's host public key as an OpenSSH line (`ssh-ed25519 AAAA...`).
    fn host_public_key(&self) -> &str;
    /// A known_hosts file pinning [`SshTarget::host_public_key`] for `[host]:port`.
    fn known_hosts_path(&self) -> &Path;

    /// `ssh` (OpenSSH client) running `remote_command`, with batch mode, strict host key
    /// checking against [`SshTarget::known_hosts_path`], no user or system ssh config, and
    /// keepalives (a frozen or rebooted peer ends the command in ~15 s). Killed when dropped.
    fn ssh_command(&self, remote_command: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts_path().display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "IdentitiesOnly=yes"])
            .arg("-o")
            .arg(format!("IdentityFile={}", self.client_key_path().display()))
            .args(["-o", "ConnectTimeout=10"])
            .args(["-o", "ServerAliveInterval=5"])
            .args(["-o", "ServerAliveCountMax=3"])
            .args(["-o", "LogLevel=ERROR"])
            .arg("-p")
            .arg(self.port().to_string())
            .arg(format!("{}@{}", self.user(), self.host()))
            .arg("--")
            .arg(remote_command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

/// Runs `remote_command` over SSH and returns its output (any exit status).
pub async fn ssh_output(target: &(impl SshTarget + ?Sized), remote_command: &str) -> Result<std::process::Output> {
    target.ssh_command(remote_command).output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BedError::NotInstalled { what: "the OpenSSH client `ssh` (openssh-client)".into(), path: "ssh".into() }
        } else {
            BedError::io(format!("running ssh to {}:{} ({remote_command})", target.host(), target.port()), e)
        }
    })
}

/// The known_hosts line for a server on a non-default port: `[host]:port keytype base64`.
pub fn known_hosts_line(host: &str, port: u16, host_public_key: &str) -> String {
    format!("[{host}]:{port} {}", crate::keys::public_key_without_comment(host_public_key))
}
