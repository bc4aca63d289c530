//! Packer's `chef-solo` and `puppet-masterless` provisioners → imgbake's `chef_solo` and
//! `puppet_apply` steps. Kept apart from [`super::steps`] so other configuration-management kinds can
//! be added there without touching this file.

use toml::Value as T;

use super::take;
use super::{Os, Tx};
use crate::model::{Body, Plugin};
use crate::report::Outcome;
use crate::tree::{Image, Step, Table};

/// The provisioners translated here.
pub(crate) const KINDS: &[&str] = &["chef-solo", "puppet-masterless"];

/// Packer runs both with `sudo` unless `prevent_sudo` is set; imgbake's steps run as the login user
/// unless their `execute_command` says otherwise.
const SUDO: &str = "sudo -n sh -c {{quote command}}";

fn step(kind: &str, body: Table) -> Step {
    Step { comment: None, common: Table::new(), kind: kind.into(), body }
}

/// A list of local paths, rebased to the tree's directory.
fn paths(tx: &mut Tx, b: &mut Table, node: &crate::model::Node, key: &str, to_key: &str, to: &str) {
    match node.strings() {
        Some(list) => {
            b.insert(to_key.into(), T::Array(list.iter().map(|p| T::String(tx.path(p))).collect()));
            tx.mapped(&node.loc, key, to);
        }
        None => tx.unmapped(&node.loc, key, "a list of local directories"),
    }
}

/// One local path, rebased.
fn path(tx: &mut Tx, b: &mut Table, node: &crate::model::Node, key: &str, to_key: &str, to: &str) {
    match node.scalar() {
        Some(p) => {
            b.insert(to_key.into(), T::String(tx.path(&p)));
            tx.mapped(&node.loc, key, to);
        }
        None => tx.unmapped(&node.loc, key, "a local path"),
    }
}

/// `prevent_sudo`: without it (Packer's default) the step gets a `sudo` wrapper on Linux.
fn sudo(p: &Plugin, body: &mut Body, os: &Os, b: &mut Table, img: &Image, tx: &mut Tx) {
    let key = format!("provisioner {}.prevent_sudo", p.kind);
    let to = format!(
        "images.{}.steps.{}.execute_command",
        img.name,
        if p.kind == "chef-solo" { "chef_solo" } else { "puppet_apply" }
    );
    let prevent = take(body, "prevent_sudo");
    let prevented = prevent.as_ref().and_then(|n| n.bool()).unwrap_or(false);
    if !prevented && !os.windows {
        b.insert("execute_command".into(), T::String(SUDO.into()));
    }
    if let Some(n) = prevent {
        tx.mapped(&n.loc, &key, &to);
    }
}

pub(crate) fn chef_solo(p: &Plugin, os: &Os, body: &mut Body, img: &Image, tx: &mut Tx) -> Step {
    let key = |k: &str| format!("provisioner chef-solo.{k}");
    let to = |k: &str| format!("images.{}.steps.chef_solo.{k}", img.name);
    let mut b = Table::new();
    // Packer installs Chef Infra Client; Cinc is imgbake's default, so the flavor is kept explicit.
    b.insert("flavor".into(), T::String("chef".into()));
    if let Some(n) = take(body, "run_list") {
        tx.put(&mut b, &n, &key("run_list"), "run_list", &to("run_list"));
    }
    if let Some(n) = take(body, "cookbook_paths") {
        paths(tx, &mut b, &n, &key("cookbook_paths"), "cookbook_paths", &to("cookbook_paths"));
    }
    for (k, own) in
        [("roles_path", "roles_path"), ("data_bags_path", "data_bags_path"), ("environments_path", "environments_path")]
    {
        if let Some(n) = take(body, k) {
            path(tx, &mut b, &n, &key(k), own, &to(own));
        }
    }
    for (k, own) in [
        ("chef_environment", "environment"),
        ("json", "json"),
        ("version", "version"),
        ("chef_license", "chef_license"),
        ("staging_directory", "staging_dir"),
    ] {
        if let Some(n) = take(body, k) {
            tx.put(&mut b, &n, &key(k), own, &to(own));
        }
    }
    if let Some(n) = take(body, "install_command") {
        match n.scalar() {
            // Packer's template (`{{if .Sudo}}sudo{{end}}`, `{{.Version}}`) means nothing to imgbake.
            Some(c) if !c.contains("{{") => {
                b.insert("install".into(), T::String(c));
                tx.mapped(&n.loc, &key("install_command"), &to("install"));
            }
            _ => tx.unmapped(
                &n.loc,
                &key("install_command"),
                "it uses Packer's template variables: write it as a plain command in `install` (it runs through the step's `execute_command`)",
            ),
        }
    }
    sudo(p, body, os, &mut b, img, tx);
    for (k, why) in [
        ("skip_install", "imgbake installs the client only when it is missing"),
        ("guest_os_type", "imgbake takes the system from `communicator.os`"),
    ] {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), why);
        }
    }
    for (k, why) in [
        (
            "config_template",
            "imgbake generates solo.rb itself (cookbook, role, data bag and environment paths, cache in the staging directory)",
        ),
        (
            "execute_command",
            "Packer's template variables mean nothing to imgbake: use the step's `execute_command` (a wrapper such as `sudo -n sh -c {{quote command}}`)",
        ),
        (
            "remote_cookbook_paths",
            "upload those cookbooks from the tree with `cookbook_paths`, or run chef-solo yourself in a `shell` step",
        ),
        (
            "encrypted_data_bag_secret_path",
            "upload the secret with a `file` step and name it in your own solo.rb in a `shell` step; imgbake's generated solo.rb has no secret path",
        ),
    ] {
        if let Some(n) = take(body, k) {
            tx.unmapped(&n.loc, &key(k), why);
        }
    }
    step("chef_solo", b)
}

pub(crate) fn puppet_masterless(p: &Plugin, os: &Os, body: &mut Body, img: &Image, tx: &mut Tx) -> Step {
    let key = |k: &str| format!("provisioner puppet-masterless.{k}");
    let to = |k: &str| format!("images.{}.steps.puppet_apply.{k}", img.name);
    let mut b = Table::new();
    if let Some(n) = take(body, "manifest_file") {
        path(tx, &mut b, &n, &key("manifest_file"), "manifest", &to("manifest"));
    }
    if let Some(n) = take(body, "module_paths") {
        paths(tx, &mut b, &n, &key("module_paths"), "module_paths", &to("module_paths"));
    }
    if let Some(n) = take(body, "hiera_config_path") {
        if let Some(h) = n.scalar() {
            b.insert("hiera_config".into(), T::String(tx.path(&h)));
            tx.report(
                Outcome::Changed,
                &n.loc,
                &key("hiera_config_path"),
                Some(to("hiera_config")),
                "Packer uploads only hiera.yaml; give its data directory as `hiera_data` (uploaded beside it under its own name, so its `datadir` works) instead of uploading it into the staging directory in an earlier step",
            );
        } else {
            tx.unmapped(&n.loc, &key("hiera_config_path"), "a local path");
        }
    }
    for (k, own) in [("facter", "facts"), ("extra_arguments", "extra_arguments"), ("staging_directory", "staging_dir")]
    {
        if let Some(n) = take(body, k) {
            tx.put(&mut b, &n, &key(k), own, &to(own));
        }
    }
    if let Some(n) = take(body, "clean_staging_directory") {
        let clean = n.bool().unwrap_or(true);
        if !clean {
            b.insert("keep_staging".into(), T::Boolean(true));
        }
        tx.mapped(&n.loc, &key("clean_staging_directory"), &to("keep_staging"));
    }
    if let Some(n) = take(body, "puppet_bin_dir") {
        match n.scalar().as_deref() {
            Some("/opt/puppetlabs/bin") | Some("/opt/puppetlabs/bin/") => tx.dropped(
                &n.loc,
                &key("puppet_bin_dir"),
                "imgbake looks for puppet on PATH and in /opt/puppetlabs/bin",
            ),
            _ => tx.unmapped(
                &n.loc,
                &key("puppet_bin_dir"),
                "imgbake looks for puppet on PATH and in /opt/puppetlabs/bin: put that directory on PATH through the step's `execute_command` (e.g. `sudo -n env PATH=DIR:/usr/bin:/bin sh -c {{quote command}}`)",
            ),
        }
    }
    sudo(p, body, os, &mut b, img, tx);
    if let Some(n) = take(body, "guest_os_type") {
        tx.dropped(&n.loc, &key("guest_os_type"), "imgbake takes the system from `communicator.os`");
    }
    for (k, why) in [
        (
            "manifest_dir",
            "give the directory as `manifest` (Puppet then reads every manifest in it), or upload it with a `file` step",
        ),
        (
            "execute_command",
            "Packer's template variables mean nothing to imgbake: use the step's `execute_command` (a wrapper) and `extra_arguments`",
        ),
        (
            "ignore_exit_codes",
            "imgbake treats puppet apply's exit codes 0 and 2 as success and 4 and 6 as failed resources; to ignore failures run puppet in a `shell` step with `valid_exit_codes`",
        ),
        ("working_directory", "imgbake runs puppet in the staging directory"),
    ] {
        if let Some(n) = take(body, k) {
            tx.unmapped(&n.loc, &key(k), why);
        }
    }
    step("puppet_apply", b)
}
