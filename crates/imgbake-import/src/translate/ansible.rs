//! Packer's `ansible` and `ansible-local` provisioners → imgbake's `ansible` and `ansible_local` steps.
//!
//! Packer's `--extra-vars "k=v k2=v2"` in `extra_arguments` becomes `extra_vars` (imgbake keeps
//! variables off command lines); its connection settings (`user`, `use_proxy`, SSH arguments, host key
//! checking turned off) are dropped: imgbake connects Ansible with the build's own login and pinned
//! host key.

use toml::Value as T;

use super::{Tx, take};
use crate::model::{Body, Node, Plugin};
use crate::tree::{Image, Step, Table};

fn step(kind: &str, body: Table) -> Step {
    Step { comment: None, common: Table::new(), kind: kind.into(), body }
}

/// `k=v k2=v2` (Ansible's key=value form); `None` for JSON, YAML or `@file` forms.
fn key_values(s: &str) -> Option<Vec<(String, String)>> {
    let s = s.trim();
    if s.starts_with('{') || s.starts_with('@') || s.starts_with('[') {
        return None;
    }
    words(s).into_iter().map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// Whitespace-separated words, keeping a `{{ ... }}` (a tree variable the value came from) in one.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && chars.peek() == Some(&'{') {
            depth += 1;
        } else if c == '}' && chars.peek() == Some(&'}') && depth > 0 {
            depth -= 1;
            cur.push(c);
            cur.push('}');
            chars.next();
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `extra_arguments`: variables out into `extra_vars`, the rest kept.
fn arguments(p: &Plugin, n: &Node, b: &mut Table, kind: &str, img: &Image, tx: &mut Tx) {
    let key = format!("provisioner {}.extra_arguments", p.kind);
    let Some(args) = n.strings() else {
        return tx.unmapped(&n.loc, &key, "a list of strings");
    };
    let mut kept = Vec::new();
    let mut vars = toml::Table::new();
    let mut it = args.into_iter();
    let mut bad = None;
    while let Some(a) = it.next() {
        let value = match a.as_str() {
            "-e" | "--extra-vars" => it.next(),
            _ => a.strip_prefix("--extra-vars=").or_else(|| a.strip_prefix("-e=")).map(str::to_string),
        };
        match value {
            Some(v) => match key_values(&v) {
                Some(kvs) => vars.extend(kvs.into_iter().map(|(k, v)| (k, T::String(v)))),
                None => bad = Some(v),
            },
            None if a.starts_with("--extra-vars") || a == "-e" => bad = Some(a),
            None => kept.push(T::String(a)),
        }
    }
    if let Some(v) = bad {
        return tx.unmapped(
            &n.loc,
            &key,
            format!(
                "`{v}`: write the variables as `extra_vars = {{ ... }}` (imgbake passes them in a private file, never on a command line)"
            ),
        );
    }
    if !kept.is_empty() {
        b.insert("extra_arguments".into(), T::Array(kept));
    }
    if !vars.is_empty() {
        b.insert("extra_vars".into(), T::Table(vars));
    }
    tx.mapped(&n.loc, &key, &format!("images.{}.steps.{kind}.extra_arguments / extra_vars", img.name));
}

/// `ansible_env_vars` (`NAME=value` strings) → `env`, without the ones that weaken host key checks or
/// point Ansible at the template's role paths (imgbake sets those itself).
fn env_vars(p: &Plugin, n: &Node, b: &mut Table, kind: &str, img: &Image, tx: &mut Tx) {
    let key = format!("provisioner {}.ansible_env_vars", p.kind);
    let Some(vars) = n.strings() else {
        return tx.unmapped(&n.loc, &key, "a list of `NAME=value` strings");
    };
    let mut env = toml::Table::new();
    let mut left_out = Vec::new();
    for v in vars {
        match v.split_once('=') {
            Some((k, _)) if matches!(k, "ANSIBLE_HOST_KEY_CHECKING" | "ANSIBLE_SSH_ARGS" | "ANSIBLE_FORCE_COLOR") => {
                left_out.push(k.to_string())
            }
            Some((k, val)) => {
                env.insert(k.to_string(), T::String(val.to_string()));
            }
            None => return tx.unmapped(&n.loc, &key, format!("`{v}` is not NAME=value")),
        }
    }
    if !env.is_empty() {
        b.insert("env".into(), T::Table(env));
    }
    if left_out.is_empty() {
        tx.mapped(&n.loc, &key, &format!("images.{}.steps.{kind}.env", img.name));
    } else {
        tx.report(
            crate::report::Outcome::Changed,
            &n.loc,
            &key,
            Some(format!("images.{}.steps.{kind}.env", img.name)),
            format!(
                "left out {}: imgbake always checks the machine's host key (the one it pinned) and sets Ansible's SSH options and plain output itself",
                left_out.join(", ")
            ),
        );
    }
}

/// The step for an `ansible` or `ansible-local` provisioner; `None` without a playbook.
pub(crate) fn provisioner(p: &Plugin, body: &mut Body, img: &Image, tx: &mut Tx) -> Option<Step> {
    let local = p.kind == "ansible-local";
    let kind = if local { "ansible_local" } else { "ansible" };
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = |k: &str| format!("images.{}.steps.{kind}.{k}", img.name);
    let mut b = Table::new();
    let playbook = take(body, "playbook_file")?;
    match playbook.str() {
        Some(s) => {
            b.insert("playbook".into(), T::String(tx.path(s)));
            tx.mapped(&playbook.loc, &key("playbook_file"), &to("playbook"));
        }
        None => {
            tx.unmapped(&playbook.loc, &key("playbook_file"), "one playbook path");
            return None;
        }
    }
    let paths: &[(&str, &str)] = if local {
        &[("playbook_dir", "playbook_dir"), ("galaxy_file", "galaxy_file")]
    } else {
        &[("galaxy_file", "galaxy_file")]
    };
    for (from, into) in paths {
        if let Some(n) = take(body, from) {
            match n.str() {
                Some(s) => {
                    b.insert(into.to_string(), T::String(tx.path(s)));
                    tx.mapped(&n.loc, &key(from), &to(into));
                }
                None => tx.unmapped(&n.loc, &key(from), "a path"),
            }
        }
    }
    let plain: &[(&str, &str)] = if local {
        &[("command", "command"), ("galaxy_command", "galaxy_command"), ("staging_directory", "staging_dir")]
    } else {
        &[
            ("command", "command"),
            ("galaxy_command", "galaxy_command"),
            ("groups", "groups"),
            ("host_alias", "host_alias"),
        ]
    };
    for (from, into) in plain {
        if let Some(n) = take(body, from) {
            tx.put(&mut b, &n, &key(from), into, &to(into));
        }
    }
    if let Some(n) = take(body, "extra_arguments") {
        arguments(p, &n, &mut b, kind, img, tx);
    }
    if let Some(n) = take(body, "ansible_env_vars") {
        env_vars(p, &n, &mut b, kind, img, tx);
    }
    let connection = "imgbake connects Ansible itself, with the build's login user and key and the host key it pinned";
    let dropped: &[(&str, &str)] = &[
        ("user", connection),
        ("use_proxy", connection),
        ("local_port", connection),
        ("ssh_host_key_file", connection),
        ("ssh_authorized_key_file", connection),
        ("use_sftp", connection),
        ("sftp_command", connection),
        ("skip_version_check", "imgbake does not check Ansible's version"),
        ("keep_inventory_file", "the generated inventory is private to the run and removed afterwards"),
        ("roles_path", "Galaxy roles go to a private path for the run"),
        ("collections_path", "Galaxy collections go to a private path for the run"),
        ("clean_staging_directory", "the staging directory is always removed"),
        ("inventory_groups", "ansible_local runs against `localhost,`"),
    ];
    for (k, why) in dropped {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), *why);
        }
    }
    Some(step(kind, b))
}

#[cfg(test)]
mod tests {
    use super::key_values;

    #[test]
    fn key_value_extra_vars() {
        assert_eq!(key_values("env=prod n=2"), Some(vec![("env".into(), "prod".into()), ("n".into(), "2".into())]));
        assert_eq!(key_values("{\"a\": 1}"), None);
        assert_eq!(key_values("@vars.yml"), None);
        assert_eq!(key_values("flag"), None);
        assert_eq!(
            key_values("env={{ var.environment }} n={{ var.n }}"),
            Some(vec![("env".into(), "{{ var.environment }}".into()), ("n".into(), "{{ var.n }}".into())])
        );
    }
}
