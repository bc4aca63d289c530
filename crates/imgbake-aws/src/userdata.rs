//! The build machine's user data: the freshly generated SSH host key imgbake pins, then the user's own
//! user data.
//!
//! - Linux: a MIME multi-part document for cloud-init. Its cloud-config part sets `ssh_keys`, so sshd
//!   starts with the pinned key and never presents another; a shell-script part checks it and, where
//!   cloud-init's ssh module did not run, installs the key and restarts sshd. The user's part follows
//!   (cloud-config, a script, a boothook, an include list, or a MIME document of its own).
//! - Windows: a `<powershell>` block running `provisioners/windows/enable-openssh.ps1` (installs and
//!   enables OpenSSH Server, opens the firewall, installs the host key and the login key), then the
//!   user's PowerShell.
//!
//! The host key is only good for the build: instances launched from the image get new keys from
//! cloud-init (`ssh_deletekeys`) or EC2Launch on their first boot.

use base64::Engine;

/// EC2's limit on user data (before base64).
pub const MAX_BYTES: usize = 16 * 1024;

/// The PowerShell script that enables OpenSSH Server on Windows: `provisioners/windows/enable-openssh.ps1`,
/// embedded at build time (one file, users can also run it by hand).
pub const ENABLE_OPENSSH_PS1: &str = include_str!("../../../provisioners/windows/enable-openssh.ps1");

const BOUNDARY: &str = "==imgbake-user-data==";

/// A host key for the build machine.
#[derive(Clone, Debug)]
pub struct HostKey {
    /// The private key, OpenSSH format.
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA... comment`.
    pub public_line: String,
}

impl HostKey {
    /// A fresh ed25519 host key.
    pub fn generate(comment: &str) -> Result<HostKey, String> {
        let (key, public_line) = imgbake_ssh::generate_ed25519(comment).map_err(|e| e.to_string())?;
        let private_openssh = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|e| format!("cannot encode the host key: {e}"))?
            .to_string();
        Ok(HostKey { private_openssh, public_line })
    }

    /// The `type base64` part of the public key, without comment.
    pub fn public_key(&self) -> String {
        self.public_line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }
}

/// Why user data could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserDataError {
    /// The user's part is of a kind cloud-init does not combine.
    #[error(
        "user data must start with #cloud-config, #!, #cloud-boothook, #include or MIME headers (imgbake combines it with its own cloud-init part); it starts with `{0}`"
    )]
    UnknownKind(String),
    /// Too big for EC2.
    #[error("the user data is {0} bytes with imgbake's part; EC2 allows {MAX_BYTES}")]
    TooBig(usize),
}

/// The MIME content type cloud-init uses for `part`, or `None` when the part carries its own headers.
fn content_type(part: &str) -> Result<Option<&'static str>, UserDataError> {
    let first = part.lines().next().unwrap_or_default().trim();
    let lower = first.to_ascii_lowercase();
    Ok(Some(match () {
        _ if first.starts_with("#cloud-config") => "text/cloud-config",
        _ if first.starts_with("#cloud-boothook") => "text/cloud-boothook",
        _ if first.starts_with("#include") => "text/x-include-url",
        _ if first.starts_with("#!") => "text/x-shellscript",
        _ if lower.starts_with("content-type:") || lower.starts_with("mime-version:") => return Ok(None),
        _ => return Err(UserDataError::UnknownKind(first.chars().take(40).collect())),
    }))
}

fn part(kind: &str, filename: &str, body: &str) -> String {
    format!(
        "Content-Type: {kind}; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"{filename}\"\n\n{}\n",
        body.trim_end()
    )
}

fn indent(text: &str, by: &str) -> String {
    text.trim_end().lines().map(|l| format!("{by}{l}")).collect::<Vec<_>>().join("\n")
}

/// The cloud-config part: cloud-init writes the key before sshd first starts.
fn cloud_config(key: &HostKey) -> String {
    format!(
        "#cloud-config\n# imgbake: the SSH host key this build pins (it changes on the next instance's first boot).\nssh_keys:\n  ed25519_private: |\n{}\n  ed25519_public: {}\n",
        indent(&key.private_openssh, "    "),
        key.public_line
    )
}

/// The fallback script: installs the key where cloud-init's ssh module did not, then restarts sshd.
fn fallback_script(key: &HostKey) -> String {
    format!(
        r#"#!/bin/sh
# imgbake: make sshd present the host key this build pins. cloud-init's ssh_keys normally did this
# before sshd started; this covers images where that module did not run.
key=/etc/ssh/ssh_host_ed25519_key
want='{public}'
[ "$(cut -d' ' -f1,2 "$key.pub" 2>/dev/null)" = "$want" ] && exit 0
umask 077
cat > "$key" <<'IMGBAKE_HOST_KEY'
{private}
IMGBAKE_HOST_KEY
echo "$want imgbake" > "$key.pub"
chmod 600 "$key"
chmod 644 "$key.pub"
for s in sshd ssh; do
  systemctl restart "$s" 2>/dev/null && exit 0
  service "$s" restart 2>/dev/null && exit 0
  rc-service "$s" restart 2>/dev/null && exit 0
done
exit 0
"#,
        public = key.public_key(),
        private = key.private_openssh.trim_end()
    )
}

/// Linux user data: imgbake's cloud-config and fallback script, then `extra` (the user's).
pub fn linux(key: &HostKey, extra: Option<&str>) -> Result<String, UserDataError> {
    let mut boundary = BOUNDARY.to_string();
    while extra.is_some_and(|e| e.contains(&boundary)) {
        boundary.push('=');
    }
    let mut doc = format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    doc.push_str(&format!("--{boundary}\n{}", part("text/cloud-config", "imgbake-host-key.cfg", &cloud_config(key))));
    doc.push_str(&format!(
        "--{boundary}\n{}",
        part("text/x-shellscript", "imgbake-host-key.sh", &fallback_script(key))
    ));
    if let Some(user) = extra.filter(|e| !e.trim().is_empty()) {
        match content_type(user)? {
            Some(kind) => doc.push_str(&format!("--{boundary}\n{}", part(kind, "user-data", user))),
            None => doc.push_str(&format!("--{boundary}\n{}\n", user.trim_end())),
        }
    }
    doc.push_str(&format!("--{boundary}--\n"));
    check_size(doc)
}

/// PowerShell single-quoted string.
fn ps_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Windows user data: the enable-openssh script with its parameters, then `extra` (the user's
/// PowerShell, with or without its own `<powershell>` tags).
pub fn windows(
    key: &HostKey,
    authorized_key: &str,
    openssh_url: Option<&str>,
    port: u16,
    extra: Option<&str>,
) -> Result<String, UserDataError> {
    let mut args = format!(
        " -HostPrivateKey @'\n{}\n'@ -HostPublicKey {} -AuthorizedKey {}",
        key.private_openssh.trim_end(),
        ps_quote(&key.public_line),
        ps_quote(authorized_key.trim())
    );
    if let Some(url) = openssh_url {
        args.push_str(&format!(" -OpenSshUrl {}", ps_quote(url)));
    }
    if port != 22 {
        args.push_str(&format!(" -Port {port}"));
    }
    let mut doc = format!("<powershell>\n& {{\n{}\n}}{args}\n", ENABLE_OPENSSH_PS1.trim_end());
    if let Some(user) = extra.filter(|e| !e.trim().is_empty()) {
        let inner = user.trim();
        let inner = inner.strip_prefix("<powershell>").and_then(|s| s.strip_suffix("</powershell>")).unwrap_or(inner);
        doc.push_str("# The user's user data:\n");
        doc.push_str(inner.trim());
        doc.push('\n');
    }
    doc.push_str("</powershell>\n<persist>false</persist>\n");
    check_size(doc)
}

fn check_size(doc: String) -> Result<String, UserDataError> {
    if doc.len() > MAX_BYTES { Err(UserDataError::TooBig(doc.len())) } else { Ok(doc) }
}

/// What this user data installs on a Linux machine, for the `sanitize` phase before capture: the host
/// key cloud-init (or the fallback script) wrote to /etc/ssh, cloud-init's copies of the user data
/// (found by the host key in them), and the build's login key (`authorized_key`, an OpenSSH public
/// key line) that cloud-init put in the login user's authorized_keys.
pub fn sanitize_items(key: &HostKey, authorized_key: &str) -> imgbake_core::sanitize::SanitizeItems {
    imgbake_core::sanitize::SanitizeItems {
        host_public_key: Some(key.public_line.clone()),
        host_key_files: vec!["/etc/ssh/ssh_host_ed25519_key".into()],
        authorized_keys: vec![authorized_key.to_string()],
        files: Vec::new(),
    }
}

/// Base64, as RunInstances wants it.
pub fn encode(doc: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(doc)
}

/// The host private key from Linux user data made by [`linux`]: what cloud-init would install. For
/// test beds that play cloud-init.
pub fn host_private_key_of(user_data: &str) -> Option<String> {
    let start = user_data.find("  ed25519_private: |\n")? + "  ed25519_private: |\n".len();
    let mut key = String::new();
    for line in user_data[start..].lines() {
        let Some(l) = line.strip_prefix("    ") else { break };
        key.push_str(l);
        key.push('\n');
    }
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HostKey {
        HostKey {
            private_openssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY-----\n"
                .into(),
            public_line: "ssh-ed25519 AAAAC3Nza imgbake-b-1".into(),
        }
    }

    #[test]
    fn linux_parts_and_user_kinds() {
        let doc = linux(&key(), Some("#cloud-config\npackages: [nginx]\n")).unwrap();
        assert!(doc.starts_with("Content-Type: multipart/mixed; boundary=\"==imgbake-user-data==\"\n"));
        assert!(doc.contains("ssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    AAAA\n"));
        assert!(doc.contains("  ed25519_public: ssh-ed25519 AAAAC3Nza imgbake-b-1\n"));
        assert!(doc.contains("want='ssh-ed25519 AAAAC3Nza'"));
        assert!(doc.contains("Content-Type: text/cloud-config; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"user-data\"\n\n#cloud-config\npackages: [nginx]\n"));
        assert!(doc.ends_with("--==imgbake-user-data==--\n"));
        assert_eq!(doc.matches("--==imgbake-user-data==\n").count(), 3);
        assert_eq!(host_private_key_of(&doc).unwrap(), key().private_openssh);

        assert!(linux(&key(), Some("#!/bin/bash\necho hi")).unwrap().contains("text/x-shellscript; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"user-data\""));
        let mime = "Content-Type: multipart/mixed; boundary=\"X\"\nMIME-Version: 1.0\n\n--X\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n--X--";
        assert!(
            linux(&key(), Some(mime))
                .unwrap()
                .contains("--==imgbake-user-data==\nContent-Type: multipart/mixed; boundary=\"X\"")
        );
        assert_eq!(linux(&key(), Some("echo hi")).unwrap_err(), UserDataError::UnknownKind("echo hi".into()));
        // The user's text cannot end imgbake's document early.
        let sneaky = "#!/bin/sh\n# --==imgbake-user-data==--\n";
        assert!(linux(&key(), Some(sneaky)).unwrap().contains("boundary=\"==imgbake-user-data===\""));
        let big = format!("#!/bin/sh\n{}", "#".repeat(MAX_BYTES));
        assert!(matches!(linux(&key(), Some(&big)), Err(UserDataError::TooBig(_))));
    }

    #[test]
    fn fallback_script_is_valid_sh() {
        let out = std::process::Command::new("sh").arg("-n").arg("-c").arg(fallback_script(&key())).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn windows_wraps_the_script_with_its_parameters() {
        let doc =
            windows(&key(), "ssh-ed25519 LOGIN it's me", None, 2222, Some("<powershell>Write-Output hi</powershell>"))
                .unwrap();
        assert!(doc.starts_with("<powershell>\n& {\n<#\n"));
        assert!(doc.contains("\n} -HostPrivateKey @'\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY-----\n'@ -HostPublicKey 'ssh-ed25519 AAAAC3Nza imgbake-b-1' -AuthorizedKey 'ssh-ed25519 LOGIN it''s me' -Port 2222\n"));
        assert!(doc.ends_with("# The user's user data:\nWrite-Output hi\n</powershell>\n<persist>false</persist>\n"));
        assert!(!windows(&key(), "k", None, 22, None).unwrap().contains("-Port"));
    }
}
