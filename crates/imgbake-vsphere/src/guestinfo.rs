//! What the build VM is told through VMware guestinfo: cloud-init user data (the build's SSH host
//! key, which imgbake pins, and its login key) and metadata, base64-encoded in the extraConfig keys
//! that cloud-init's VMware datasource reads. Templates without cloud-init ignore them: use
//! `communicator.host_key = "known_hosts"` and a key the template already trusts.

use base64::Engine;
use imgbake_core::sanitize::SanitizeItems;

use crate::vim::option_value;

/// extraConfig keys cloud-init's VMware datasource reads.
pub const USERDATA: &str = "guestinfo.userdata";
/// Its encoding key.
pub const USERDATA_ENCODING: &str = "guestinfo.userdata.encoding";
/// The metadata key.
pub const METADATA: &str = "guestinfo.metadata";
/// Its encoding key.
pub const METADATA_ENCODING: &str = "guestinfo.metadata.encoding";

/// The keys one build gives its VM.
#[derive(Clone, Debug)]
pub struct BuildKeys {
    /// The host key, OpenSSH private format.
    pub host_private: String,
    /// `ssh-ed25519 AAAA… imgbake-BUILD`.
    pub host_public: String,
    /// The login key's public line.
    pub login_public: String,
}

fn indent(text: &str, by: &str) -> String {
    text.trim_end().lines().map(|l| format!("{by}{l}")).collect::<Vec<_>>().join("\n")
}

/// The cloud-config: the host key before sshd first starts, the login key for the default user.
pub fn user_data(keys: &BuildKeys) -> String {
    format!(
        "#cloud-config\n# imgbake: this build's SSH host key (pinned) and login key; both are removed before capture.\nssh_keys:\n  ed25519_private: |\n{}\n  ed25519_public: {}\nssh_authorized_keys:\n  - {}\n",
        indent(&keys.host_private, "    "),
        keys.host_public,
        keys.login_public.trim()
    )
}

/// The metadata: a fresh instance id (so cloud-init runs its per-instance modules on this clone) and
/// the hostname.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The extraConfig entries (a `VirtualMachineConfigSpec` fragment) carrying both.
pub fn config_entries(keys: &BuildKeys, instance_id: &str, hostname: &str) -> String {
    [
        option_value(USERDATA, &b64(&user_data(keys))),
        option_value(USERDATA_ENCODING, "base64"),
        option_value(METADATA, &b64(&meta_data(instance_id, hostname))),
        option_value(METADATA_ENCODING, "base64"),
    ]
    .concat()
}

/// The entries that blank them again before capture: a template must not carry a build's keys.
pub fn cleared_entries() -> String {
    [USERDATA, USERDATA_ENCODING, METADATA, METADATA_ENCODING].iter().map(|k| option_value(k, "")).collect()
}

/// What the build installed on the machine, for the `sanitize` phase.
pub fn sanitize_items(keys: &BuildKeys) -> SanitizeItems {
    SanitizeItems {
        host_public_key: Some(keys.host_public.clone()),
        host_key_files: vec!["/etc/ssh/ssh_host_ed25519_key".into()],
        authorized_keys: vec![keys.login_public.clone()],
        files: Vec::new(),
    }
}

/// The host private key in user data made by [`user_data`] (base64 or not): what cloud-init would
/// install. For test beds that play cloud-init.
pub fn host_private_key_of(user_data: &str) -> Option<String> {
    let decoded;
    let text = match base64::engine::general_purpose::STANDARD.decode(user_data.trim()) {
        Ok(bytes) => {
            decoded = String::from_utf8(bytes).ok()?;
            decoded.as_str()
        }
        Err(_) => user_data,
    };
    let start = text.find("  ed25519_private: |\n")? + "  ed25519_private: |\n".len();
    let key: Vec<&str> = text[start..].lines().map_while(|l| l.strip_prefix("    ")).collect();
    (!key.is_empty()).then(|| key.join("\n") + "\n")
}

/// The login key in user data made by [`user_data`] (base64 or not).
pub fn login_key_of(user_data: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(user_data.trim()).ok();
    let text = bytes.and_then(|b| String::from_utf8(b).ok()).unwrap_or_else(|| user_data.to_string());
    let after = text.split("ssh_authorized_keys:\n").nth(1)?;
    after.lines().next()?.trim().strip_prefix("- ").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_round_trip_through_the_user_data() {
        let keys = BuildKeys {
            host_private: "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\ndef\n-----END OPENSSH PRIVATE KEY-----\n".into(),
            host_public: "ssh-ed25519 AAAAhost imgbake-b1".into(),
            login_public: "ssh-ed25519 AAAAlogin imgbake-b1".into(),
        };
        let ud = user_data(&keys);
        assert!(ud.starts_with("#cloud-config\n"));
        assert_eq!(host_private_key_of(&ud).as_deref(), Some(keys.host_private.as_str()));
        assert_eq!(host_private_key_of(&b64(&ud)).as_deref(), Some(keys.host_private.as_str()));
        assert_eq!(login_key_of(&b64(&ud)).as_deref(), Some("ssh-ed25519 AAAAlogin imgbake-b1"));
        let entries = config_entries(&keys, "i-1", "web");
        assert!(
            entries.contains("<key>guestinfo.userdata.encoding</key><value xsi:type=\"xsd:string\">base64</value>")
        );
        assert_eq!(cleared_entries().matches("<extraConfig>").count(), 4);
    }
}
