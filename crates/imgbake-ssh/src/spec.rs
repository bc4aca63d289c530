//! From a tree image's `communicator` settings (plus what the builder knows: the machine's address, a
//! key it installed, the host key it injected) to an [`SshConfig`]. Every builder that talks SSH shares
//! this mapping, so `communicator` means the same everywhere.
//!
//! ```
//! use imgbake_config::schema::Open;
//! use imgbake_config::{LoadOptions, Schemas, Tree};
//! use imgbake_ssh::spec::{Machine, ssh_config};
//! use imgbake_ssh::HostKeyPolicy;
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("tree.toml"), r#"
//! [images.base]
//! builder = "cloud"
//! source = { image = "base-1" }
//! communicator = { username = "admin", port = 2222 }
//! "#).unwrap();
//! // Any builder will do: `communicator` means the same for all of them.
//! let schemas = Schemas::new().with(Open::new("cloud", &["image"]).arc());
//! let tree = Tree::load(&dir.path().join("tree.toml"), &LoadOptions { schemas, ..Default::default() }).unwrap();
//! let (key, _public) = imgbake_ssh::generate_ed25519("build key").unwrap();
//! let host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ".to_string();
//! let machine = Machine::new("203.0.113.7").generated_key(key).pinned_host_key(host_key.clone());
//! let config = ssh_config(&tree, tree.image("base").unwrap(), &machine).unwrap();
//! assert_eq!(config.target(), "admin@203.0.113.7:2222");
//! assert_eq!(config.host_key, HostKeyPolicy::Pinned(vec![host_key]));
//! ```

use std::sync::Arc;
use std::time::Duration;

use imgbake_config::{Bastion, Image, Span, Spanned, Tree};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::wait::Wait;
use russh::keys::PrivateKey;

use crate::config::{Auth, HostKeyPolicy, SshConfig};

/// What the builder knows about the machine it made.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// The address the builder found (public IP, DNS name; `127.0.0.1` for a forwarded port).
    /// `communicator.host` overrides it.
    pub address: String,
    /// The port the builder found (a forwarded port); `communicator.port` overrides it. Default 22.
    pub port: Option<u16>,
    /// A login key the builder installed for this build (a cloud key pair, user data). Used unless
    /// `communicator.private_key_file` is set.
    pub generated_key: Option<Arc<PrivateKey>>,
    /// The host key the builder injected, as an OpenSSH public key line: what `host_key = "pinned"`
    /// (the default) pins.
    pub pinned_host_key: Option<String>,
    /// How long a rejected login key still means "not installed yet" (a cloud machine's first boot,
    /// where cloud-init writes the key after sshd may already answer). Default 0.
    pub auth_grace: Duration,
}

impl Machine {
    /// A machine at `address`.
    pub fn new(address: impl Into<String>) -> Self {
        Machine { address: address.into(), ..Machine::default() }
    }

    /// Retry rejected logins for this long (see [`Machine::auth_grace`]).
    pub fn auth_grace(mut self, grace: Duration) -> Self {
        self.auth_grace = grace;
        self
    }

    /// With the port the builder found.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// With the login key the builder installed.
    pub fn generated_key(mut self, key: Arc<PrivateKey>) -> Self {
        self.generated_key = Some(key);
        self
    }

    /// With the host key the builder injected.
    pub fn pinned_host_key(mut self, line: impl Into<String>) -> Self {
        self.pinned_host_key = Some(line.into());
        self
    }
}

/// How long to wait for the machine to accept SSH the first time: `communicator.timeout` (default
/// 10 minutes), polled with a backoff capped at 2 s.
pub fn connect_wait(image: &Image) -> Wait {
    let timeout = image.communicator.timeout.map(|d| d.get()).unwrap_or(Duration::from_secs(600));
    Wait::new(timeout).interval(Duration::from_millis(250), Duration::from_secs(2))
}

fn span<T>(v: &Spanned<T>) -> Span {
    Span::new(v.span())
}

fn config_error(message: String) -> BuildError {
    BuildError::new(ErrorKind::Config, message)
}

/// The SSH settings for `image`'s build machine.
///
/// - host: `communicator.host`, else the machine's address; port: `communicator.port`, else the
///   builder's port, else 22; user: `communicator.username` (required);
/// - login: `communicator.private_key_file`, else the builder's generated key; then
///   `communicator.password`;
/// - host key: `pinned` (default) pins the key the builder injected, `known_hosts` reads
///   `communicator.known_hosts_file` (default `~/.ssh/known_hosts`), `insecure` accepts any key;
/// - `keepalive`, `boot_id_command`, `os` and `bastion` map to the fields of the same meaning.
///
/// Errors point at the offending value in the tree file.
pub fn ssh_config(tree: &Tree, image: &Image, machine: &Machine) -> Result<SshConfig, BuildError> {
    let c = &image.communicator;
    let name = &image.name;
    if let Some(k) = &c.kind
        && k.get_ref() != "ssh"
    {
        return Err(config_error(format!(
            "image `{name}`: communicator type `{}` is not supported; use \"ssh\"",
            k.get_ref()
        ))
        .at(span(k)));
    }
    let user = c.username.as_ref().ok_or_else(|| {
        config_error(format!(
            "image `{name}` has no communicator.username: set the image's login user (e.g. `admin` on Debian, `ec2-user` on Amazon Linux, `ubuntu` on Ubuntu)"
        ))
        .at(image.span)
    })?;
    let host = c.host.clone().unwrap_or_else(|| machine.address.clone());
    if host.is_empty() {
        return Err(config_error(format!(
            "image `{name}`: the builder found no address for the machine; set communicator.host"
        ))
        .at(image.span));
    }
    let port = c.port.or(machine.port).unwrap_or(22);
    let mut config = SshConfig::new(host, port, user.get_ref().clone());

    match (&c.private_key_file, &machine.generated_key) {
        (Some(file), _) => config.auth.push(Auth::key_file(tree.path(file))),
        (None, Some(key)) => config.auth.push(Auth::Key(key.clone())),
        (None, None) => {}
    }
    if let Some(p) = &c.password {
        config.auth.push(Auth::Password(p.clone()));
    }
    if config.auth.is_empty() {
        return Err(config_error(format!(
            "image `{name}`: no way to log in: set communicator.private_key_file or communicator.password (this builder installs no key of its own)"
        ))
        .at(span(user)));
    }

    config.host_key = match c.host_key.as_ref().map(|h| (h.get_ref().as_str(), span(h))) {
        None | Some(("pinned", _)) => match &machine.pinned_host_key {
            Some(k) => HostKeyPolicy::Pinned(vec![k.clone()]),
            None => {
                return Err(config_error(format!(
                    "image `{name}`: host_key = \"pinned\" (the default) needs a host key the builder injects, and this builder injected none; set communicator.host_key = \"known_hosts\" (with known_hosts_file) or \"insecure\""
                ))
                .at(c.host_key.as_ref().map(span).unwrap_or(image.span)));
            }
        },
        Some(("known_hosts", _)) => known_hosts(tree, c.known_hosts_file.as_ref()),
        Some(("insecure", _)) => HostKeyPolicy::InsecureAcceptAny,
        Some((other, at)) => {
            return Err(config_error(format!(
                "image `{name}`: unknown communicator.host_key `{other}`; use \"pinned\", \"known_hosts\" or \"insecure\""
            ))
            .at(at));
        }
    };
    if let Some(k) = c.keepalive {
        config.keepalive_interval = k.get();
    }
    config.auth_grace = machine.auth_grace;
    config.boot_identity_command = c.boot_id_command.clone();
    config.os = c.os.unwrap_or_default();
    if let Some(b) = &c.bastion {
        config.bastion = Some(Box::new(bastion(tree, name, b)?));
    }
    Ok(config)
}

fn known_hosts(tree: &Tree, file: Option<&Spanned<String>>) -> HostKeyPolicy {
    match file {
        Some(f) => HostKeyPolicy::KnownHosts(tree.path(f)),
        None => HostKeyPolicy::default(),
    }
}

fn bastion(tree: &Tree, image: &str, b: &Bastion) -> Result<SshConfig, BuildError> {
    let mut config = SshConfig::new(b.host.get_ref().clone(), b.port.unwrap_or(22), b.username.get_ref().clone());
    if let Some(f) = &b.private_key_file {
        config.auth.push(Auth::key_file(tree.path(f)));
    }
    if let Some(p) = &b.password {
        config.auth.push(Auth::Password(p.clone()));
    }
    if config.auth.is_empty() {
        return Err(config_error(format!(
            "image `{image}`: the bastion {} has no way to log in: set bastion.private_key_file or bastion.password",
            b.host.get_ref()
        ))
        .at(span(&b.host)));
    }
    config.host_key = match b.host_key.as_ref().map(|h| (h.get_ref().as_str(), span(h))) {
        None | Some(("known_hosts", _)) => known_hosts(tree, b.known_hosts_file.as_ref()),
        Some(("pinned", at)) => match &b.host_public_key {
            Some(k) => HostKeyPolicy::Pinned(vec![k.clone()]),
            None => {
                return Err(config_error(format!(
                    "image `{image}`: bastion host_key = \"pinned\" needs bastion.host_public_key (the bastion's OpenSSH public key line)"
                ))
                .at(at));
            }
        },
        Some(("insecure", _)) => HostKeyPolicy::InsecureAcceptAny,
        Some((other, at)) => {
            return Err(config_error(format!(
                "image `{image}`: unknown bastion.host_key `{other}`; use \"known_hosts\", \"pinned\" or \"insecure\""
            ))
            .at(at));
        }
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgbake_config::LoadOptions;

    const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn tree(communicator: &str) -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id_build"), "not read here").unwrap();
        std::fs::write(dir.path().join("known"), "").unwrap();
        let text = format!(
            "[images.base]\nbuilder = \"cloud\"\nsource = {{ image = \"base-1\" }}\ncloud = {{ zone = \"z-1\" }}\n[images.base.communicator]\n{communicator}\n"
        );
        std::fs::write(dir.path().join("tree.toml"), text).unwrap();
        let schemas = imgbake_config::Schemas::new().with(imgbake_config::schema::Open::new("cloud", &["image"]).arc());
        let t = Tree::load(&dir.path().join("tree.toml"), &LoadOptions { schemas, ..Default::default() }).unwrap();
        (dir, t)
    }

    fn machine() -> Machine {
        let (key, _) = crate::generate_ed25519("k").unwrap();
        Machine::new("198.51.100.1").generated_key(key).pinned_host_key(HOST_KEY)
    }

    #[test]
    fn defaults_pin_the_injected_key_and_use_the_generated_one() {
        let (_d, t) = tree("username = \"admin\"");
        let c = ssh_config(&t, t.image("base").unwrap(), &machine()).unwrap();
        assert_eq!(c.target(), "admin@198.51.100.1:22");
        assert!(matches!(c.auth.as_slice(), [Auth::Key(_)]));
        assert_eq!(c.host_key, HostKeyPolicy::Pinned(vec![HOST_KEY.into()]));
        assert_eq!(connect_wait(t.image("base").unwrap()).timeout, Duration::from_secs(600));
    }

    #[test]
    fn overrides_and_files_resolve_against_the_tree() {
        let (d, t) = tree(
            "username = \"root\"\nhost = \"127.0.0.1\"\nport = 2200\nprivate_key_file = \"id_build\"\npassword = \"pw\"\nhost_key = \"known_hosts\"\nknown_hosts_file = \"known\"\nkeepalive = \"7s\"\nos = \"windows\"\nboot_id_command = \"echo 1\"\ntimeout = \"30s\"",
        );
        let img = t.image("base").unwrap();
        let c = ssh_config(&t, img, &machine().port(2222)).unwrap();
        assert_eq!(c.target(), "root@127.0.0.1:2200");
        match c.auth.as_slice() {
            [Auth::KeyFile { path, .. }, Auth::Password(p)] => {
                assert_eq!(path.canonicalize().unwrap(), d.path().join("id_build").canonicalize().unwrap());
                assert_eq!(p, "pw");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&c.host_key, HostKeyPolicy::KnownHosts(p) if p.ends_with("known")));
        assert_eq!(c.keepalive_interval, Duration::from_secs(7));
        assert_eq!(c.os, imgbake_config::Os::Windows);
        assert_eq!(c.boot_identity_command.as_deref(), Some("echo 1"));
        assert_eq!(connect_wait(img).timeout, Duration::from_secs(30));
        // The builder's port is used when the tree gives none.
        let (_d, t) = tree("username = \"root\"");
        let c = ssh_config(&t, t.image("base").unwrap(), &machine().port(2222)).unwrap();
        assert_eq!(c.port, 2222);
    }

    #[test]
    fn errors_point_at_the_value() {
        // (Unknown host_key values and a pinned bastion without its key are rejected by validation
        // already; these are the errors only the builder's situation can cause.)
        let (_d, t) = tree("username = \"admin\"\nhost_key = \"pinned\"");
        let e = ssh_config(&t, t.image("base").unwrap(), &Machine::new("h")).unwrap_err();
        assert!(e.message.contains("no way to log in"), "{}", e.message);
        assert!(t.locate(e.span.unwrap()).ends_with("tree.toml:6:12"), "{}", t.locate(e.span.unwrap()));
        let (key, _) = crate::generate_ed25519("k").unwrap();
        let e = ssh_config(&t, t.image("base").unwrap(), &Machine::new("h").generated_key(key)).unwrap_err();
        assert!(e.message.contains("injected none"), "{}", e.message);
        assert!(t.locate(e.span.unwrap()).ends_with("tree.toml:7:12"), "{}", t.locate(e.span.unwrap()));
        assert_eq!(e.kind, ErrorKind::Config);

        // insecure needs nothing from the builder but a login.
        let (_d, t) = tree("username = \"admin\"\nhost_key = \"insecure\"\npassword = \"x\"");
        let c = ssh_config(&t, t.image("base").unwrap(), &Machine::new("h")).unwrap();
        assert_eq!(c.host_key, HostKeyPolicy::InsecureAcceptAny);
        assert!(matches!(c.auth.as_slice(), [Auth::Password(_)]));
    }

    #[test]
    fn bastion_settings() {
        let (_d, t) = tree(&format!(
            "username = \"admin\"\n[images.base.communicator.bastion]\nhost = \"jump.example.com\"\nport = 2022\nusername = \"ops\"\nprivate_key_file = \"id_build\"\nhost_key = \"pinned\"\nhost_public_key = \"{HOST_KEY}\""
        ));
        let c = ssh_config(&t, t.image("base").unwrap(), &machine()).unwrap();
        let b = c.bastion.unwrap();
        assert_eq!(b.target(), "ops@jump.example.com:2022");
        assert_eq!(b.host_key, HostKeyPolicy::Pinned(vec![HOST_KEY.into()]));
    }
}
