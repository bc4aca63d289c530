//! Communicator keys (`ssh_*`, `winrm_*`, `communicator`) and whether the image is Windows.

use toml::Value as T;

use super::{Tx, duration, take, value};
use crate::model::{Body, Build};
use crate::tree::Image;

/// The operating system the build's machine runs, and the evidence for Windows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Os {
    pub windows: bool,
    /// Why the import took the image for Windows, for the report.
    pub because: Option<String>,
}

/// Windows when the template says so in any of the ways teams write it.
pub(crate) fn os_of(b: &Build) -> Os {
    let mut why: Option<String> = None;
    for s in &b.sources {
        let get = |k: &str| s.body.get(k).and_then(|n| n.scalar()).unwrap_or_default();
        let hint = if get("communicator") == "winrm" {
            Some("it connects over WinRM".to_string())
        } else if get("ssh_username").eq_ignore_ascii_case("administrator")
            || get("winrm_username").eq_ignore_ascii_case("administrator")
        {
            Some("it logs in as Administrator".into())
        } else if get("user_data_file").to_ascii_lowercase().ends_with(".ps1") {
            Some("its user data is a PowerShell script".into())
        } else if get("guest_os_type").to_ascii_lowercase().starts_with("win") {
            Some(format!("its guest OS type is {}", get("guest_os_type")))
        } else {
            let filter =
                s.body.get("source_ami_filter").and_then(|f| f.map().map(|m| format!("{m:?}"))).unwrap_or_default();
            filter.to_ascii_lowercase().contains("windows").then(|| "its source AMI filter looks for Windows".into())
        };
        if hint.is_some() {
            why = hint;
            break;
        }
    }
    if why.is_none() {
        why = b
            .provisioners
            .iter()
            .find(|p| matches!(p.kind.as_str(), "powershell" | "windows-restart" | "windows-update" | "windows-shell"))
            .map(|p| format!("it has a `{}` provisioner", p.kind));
    }
    Os { windows: why.is_some(), because: why }
}

/// Moves the communicator keys of a source into `img.communicator`, reporting each.
pub(crate) fn communicator(body: &mut Body, builder: &str, img: &mut Image, kind: &str, tx: &mut Tx) {
    transport(body, builder, img, kind, tx);
    login(body, builder, img, kind, tx);
    timeouts(body, img, kind, tx);
    bastion(body, img, kind, tx);
    not_needed(body, kind, tx);
}

/// `communicator`: SSH stays; WinRM and `none` become SSH.
fn transport(body: &mut Body, builder: &str, img: &Image, kind: &str, tx: &mut Tx) {
    let to = |k: &str| format!("images.{}.communicator.{k}", img.name);
    let key = |k: &str| format!("{kind}.{k}");
    if let Some(n) = take(body, "communicator") {
        match n.scalar().as_deref() {
            Some("ssh") => tx.dropped(&n.loc, &key("communicator"), "SSH is imgbake's communicator"),
            Some("winrm") => {
                let note = if builder == "aws" {
                    "imgbake connects over SSH: on AWS its own user data installs OpenSSH Server with the build's pinned host key"
                } else {
                    "imgbake connects over SSH: the source must run OpenSSH Server (Windows Server 2019+: `Add-WindowsCapability -Online -Name OpenSSH.Server~~~~0.0.1.0`)"
                };
                tx.report(crate::report::Outcome::Changed, &n.loc, &key("communicator"), Some(to("type")), note);
            }
            Some("none") => tx.report(
                crate::report::Outcome::Changed,
                &n.loc,
                &key("communicator"),
                Some(to("type")),
                "imgbake always connects (SSH) to run steps and to detect reboots; an image without steps only boots and is captured",
            ),
            _ => tx.unmapped(&n.loc, &key("communicator"), "only `ssh` (and `winrm`, replaced by SSH) carry over"),
        }
    }
}

/// User, password, key, port, host.
fn login(body: &mut Body, builder: &str, img: &mut Image, kind: &str, tx: &mut Tx) {
    let to = |k: &str| format!("images.{}.communicator.{k}", img.name);
    let key = |k: &str| format!("{kind}.{k}");
    for k in ["ssh_username", "winrm_username"] {
        if let Some(n) = take(body, k) {
            tx.put(&mut img.communicator, &n, &key(k), "username", &to("username"));
        }
    }
    for k in ["ssh_password", "winrm_password"] {
        if let Some(n) = take(body, k) {
            if builder == "aws" {
                tx.dropped(
                    &n.loc,
                    &key(k),
                    "on AWS imgbake logs in with a key it makes for each build (Windows too): no password",
                );
            } else if !n.str().is_some_and(is_reference) {
                // A password written into the template stays out of the tree.
                tx.unmapped(&n.loc, &key(k), LITERAL_PASSWORD);
            } else {
                tx.put(&mut img.communicator, &n, &key(k), "password", &to("password"));
            }
        }
    }
    if let Some(n) = take(body, "ssh_private_key_file") {
        match n.scalar() {
            Some(p) => {
                img.communicator.insert("private_key_file".into(), T::String(tx.path(&p)));
                tx.mapped(&n.loc, &key("ssh_private_key_file"), &to("private_key_file"));
            }
            None => tx.unmapped(&n.loc, &key("ssh_private_key_file"), "a path"),
        }
    }
    if let Some(n) = take(body, "ssh_port") {
        tx.put(&mut img.communicator, &n, &key("ssh_port"), "port", &to("port"));
    }
    if builder != "null"
        && let Some(n) = take(body, "ssh_host")
    {
        tx.put(&mut img.communicator, &n, &key("ssh_host"), "host", &to("host"));
    }
}

/// How long to wait for SSH, and keepalives.
fn timeouts(body: &mut Body, img: &mut Image, kind: &str, tx: &mut Tx) {
    let to = |k: &str| format!("images.{}.communicator.{k}", img.name);
    let key = |k: &str| format!("{kind}.{k}");
    for k in ["ssh_timeout", "ssh_wait_timeout", "winrm_timeout"] {
        if let Some(n) = take(body, k) {
            match duration(&n) {
                Ok(v) => {
                    img.communicator.insert("timeout".into(), v);
                    tx.mapped(&n.loc, &key(k), &to("timeout"));
                }
                Err(why) => tx.unmapped(&n.loc, &key(k), why),
            }
        }
    }
    if let Some(n) = take(body, "ssh_keep_alive_interval") {
        match duration(&n) {
            Ok(v) => {
                img.communicator.insert("keepalive".into(), v);
                tx.mapped(&n.loc, &key("ssh_keep_alive_interval"), &to("keepalive"));
            }
            Err(why) => tx.unmapped(&n.loc, &key("ssh_keep_alive_interval"), why),
        }
    }
}

/// Keys imgbake's communicator does not need, and why.
fn not_needed(body: &mut Body, kind: &str, tx: &mut Tx) {
    let key = |k: &str| format!("{kind}.{k}");
    const NOT_NEEDED: &[(&str, &str)] = &[
        ("winrm_port", "SSH on port 22 (`communicator.port`)"),
        ("winrm_host", "SSH goes to the address the builder finds (`communicator.host` to override)"),
        ("winrm_use_ssl", "SSH is encrypted and the host key is pinned"),
        ("winrm_insecure", "SSH's host key is pinned: nothing to skip"),
        ("winrm_use_ntlm", "SSH authenticates with the build's key"),
        ("winrm_no_proxy", "SSH does not use HTTP proxies"),
        ("winrm_transport_decorator", "SSH has no transport decorators"),
        ("ssh_pty", "imgbake runs commands without a terminal; use `sudo -n` (no requiretty) in execute_command"),
        ("ssh_handshake_attempts", "imgbake retries the first connection until `communicator.timeout`"),
        ("ssh_read_write_timeout", "a dead connection is noticed by keepalives (`communicator.keepalive`)"),
        ("ssh_file_transfer_method", "imgbake copies files over SFTP"),
        ("ssh_disable_agent_forwarding", "imgbake never forwards an agent"),
        ("ssh_clear_authorized_keys", "the image is sanitized before capture: the build's key is removed (`sanitize`)"),
        ("temporary_key_pair_type", "imgbake makes an ed25519 key per build (RSA where the platform needs it)"),
        ("temporary_key_pair_name", "the build's key pair is named and tagged by the build id"),
        ("temporary_key_pair_bits", "imgbake makes an ed25519 key per build"),
        ("temporary_key_pair_algorithm", "imgbake makes an ed25519 key per build"),
        ("pause_before_connecting", "imgbake waits for SSH and the boot identity: no pause"),
        ("ssh_certificate_file", "not supported yet; use a key (`communicator.private_key_file`)"),
    ];
    for (k, why) in NOT_NEEDED {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), *why);
        }
    }
    if let Some(n) = take(body, "ssh_agent_auth") {
        if n.bool() == Some(true) {
            tx.unmapped(
                &n.loc,
                &key("ssh_agent_auth"),
                "imgbake does not use an SSH agent; set `communicator.private_key_file`",
            );
        } else {
            tx.dropped(&n.loc, &key("ssh_agent_auth"), "false is imgbake's behaviour");
        }
    }
}

const LITERAL_PASSWORD: &str = "a password written in the template: declare a sensitive variable and set the password to `{{ var.NAME }}` (passed with --var or IMGBAKE_VAR_NAME)";

/// A value taken from a variable or the environment, not written in the template.
fn is_reference(v: &str) -> bool {
    v.starts_with("{{ var.") || v.starts_with("{{ env ")
}

fn bastion(body: &mut Body, img: &mut Image, kind: &str, tx: &mut Tx) {
    let mut b = crate::tree::Table::new();
    for (k, to_key) in [
        ("ssh_bastion_host", "host"),
        ("ssh_bastion_port", "port"),
        ("ssh_bastion_username", "username"),
        ("ssh_bastion_password", "password"),
        ("ssh_bastion_private_key_file", "private_key_file"),
    ] {
        if let Some(n) = take(body, k) {
            let to = format!("images.{}.communicator.bastion.{to_key}", img.name);
            match value(&n) {
                Ok(T::String(p)) if to_key == "private_key_file" => {
                    b.insert(to_key.into(), T::String(tx.path(&p)));
                    tx.mapped(&n.loc, &format!("{kind}.{k}"), &to);
                }
                Ok(T::String(p)) if to_key == "password" && !is_reference(&p) => {
                    tx.unmapped(&n.loc, &format!("{kind}.{k}"), LITERAL_PASSWORD)
                }
                _ => {
                    tx.put(&mut b, &n, &format!("{kind}.{k}"), to_key, &to);
                }
            }
        }
    }
    if !b.is_empty() {
        // Packer does not check a bastion's host key; imgbake does by default (known_hosts).
        img.communicator.insert("bastion".into(), T::Table(b.into_iter().collect()));
    }
}
