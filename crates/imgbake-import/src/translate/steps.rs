//! Provisioners → steps.

use toml::Value as T;

use super::{Os, Tx, duration, take, value};
use crate::model::{Body, Node, Plugin};
use crate::report::Outcome;
use crate::tree::{Image, Step, Table};

/// What to do instead of a configuration-management provisioner imgbake does not run itself.
fn recipe(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "chef-client" => {
            "imgbake runs Chef in solo mode only (a `chef_solo` step with the cookbooks from the tree); to converge against a Chef server, run `chef-client` in a `shell` / `powershell` step with the client key uploaded by a `file` step"
        }
        "puppet-server" => {
            "imgbake runs Puppet masterless only (a `puppet_apply` step with the manifest and modules from the tree); to run against a Puppet server, run `puppet agent --test` in a `shell` step"
        }
        "salt-masterless" => {
            "imgbake has no Salt step: upload the states with a `file` step and run `salt-call --local state.apply` in a `shell` step"
        }
        "inspec" | "goss" => {
            "tests belong in a `test` step: upload the profile and run it with a JUnit reporter (`inspec exec . --reporter junit2:report.xml`, `goss validate -f junit > report.xml`)"
        }
        "converge" => "upload the modules with a `file` step and run them in a `shell` step",
        k if k.starts_with("error-cleanup-provisioner") => {
            "imgbake removes the build machine and everything it created when a build fails; to look at a failed machine, build with `--on-error=abort` (or `ask`)"
        }
        _ => return None,
    })
}

/// The provisioners imgbake has a step for.
const KINDS: &[&str] = &[
    "shell",
    "windows-shell",
    "powershell",
    "file",
    "windows-restart",
    "windows-update",
    "shell-local",
    "breakpoint",
    "ansible",
    "ansible-local",
];

/// The steps for one provisioner, appended to `img.steps`.
pub(crate) fn provisioner(p: &Plugin, os: &Os, sources: &[(&str, &str)], img: &mut Image, tx: &mut Tx) {
    let kind_key = format!("provisioner {}", p.kind);
    let applies: Vec<&str> = sources
        .iter()
        .filter(|(name, _)| {
            (p.only.is_empty() || p.only.iter().any(|o| o == name)) && !p.except.iter().any(|e| e == name)
        })
        .map(|(_, b)| *b)
        .collect();
    if applies.is_empty() {
        return tx.dropped(&p.loc, &kind_key, format!("`only`/`except` leave it out of image `{}`", img.name));
    }
    if !KINDS.contains(&p.kind.as_str()) && !super::cm::KINDS.contains(&p.kind.as_str()) {
        let why = recipe(&p.kind)
            .map(str::to_string)
            .unwrap_or_else(|| format!("imgbake has no `{}` step; the step kinds are shell, file, powershell, reboot, windows_update, test, local, breakpoint, ansible, ansible_local, chef_solo, puppet_apply, powershell_dsc", p.kind));
        tx.unmapped(&p.loc, &kind_key, why);
        return not_carried(p, p.body.entries.clone(), tx);
    }
    let mut body = p.body.clone();
    if p.kind == "breakpoint"
        && let Some(n) = take(&mut body, "disable")
    {
        if n.bool() == Some(true) {
            tx.dropped(&p.loc, &kind_key, "disabled");
            tx.dropped(&n.loc, &format!("{kind_key}.disable"), "the breakpoint is left out");
            return not_carried(p, body.entries, tx);
        }
        tx.dropped(&n.loc, &format!("{kind_key}.disable"), "false is the default");
    }
    let mut common = Table::new();
    if applies.len() < sources.len() {
        common.insert("only".into(), T::Array(applies.iter().map(|b| T::String(b.to_string())).collect()));
        tx.mapped(&p.loc, &format!("{kind_key}.only/except"), &format!("images.{}.steps.only", img.name));
    }
    common_keys(p, &mut body, &mut common, img, tx);
    let Some(steps) = kind(p, os, &mut body, img, tx) else {
        return not_carried(p, body.entries, tx);
    };
    tx.mapped(&p.loc, &kind_key, &format!("images.{}.steps", img.name));
    for (k, n) in body.entries {
        tx.unmapped(&n.loc, &format!("{kind_key}.{k}"), format!("imgbake's `{}` step has no `{k}`", p.kind));
    }
    let n = steps.len();
    for (i, mut s) in steps.into_iter().enumerate() {
        if i == 0 {
            s.comment.clone_from(&p.comment);
        }
        // The common keys go on the last step of a pair (a `file` upload then the command).
        if i + 1 == n {
            s.common.extend(common.clone());
        } else if let Some(only) = common.get("only") {
            s.common.insert("only".into(), only.clone());
        }
        img.steps.push(s);
    }
}

/// The keys of a provisioner that is not carried over.
fn not_carried(p: &Plugin, keys: Vec<(String, Node)>, tx: &mut Tx) {
    for (k, n) in keys {
        tx.dropped(&n.loc, &format!("provisioner {}.{k}", p.kind), "its provisioner is not carried over");
    }
}

/// The steps of a provisioner of a kind imgbake has; `None` when nothing could be made of it.
fn kind(p: &Plugin, os: &Os, body: &mut Body, img: &Image, tx: &mut Tx) -> Option<Vec<Step>> {
    Some(match p.kind.as_str() {
        "shell" if os.windows && is_cmd(body) => cmd(p, body, img, tx),
        "shell" => vec![shell(p, body, "shell", img, tx)],
        "windows-shell" => cmd(p, body, img, tx),
        "powershell" => vec![shell(p, body, "powershell", img, tx)],
        "file" => file(body, img, tx),
        "windows-restart" => vec![restart(p, body, img, tx)],
        "windows-update" => vec![windows_update(p, body, img, tx)],
        "shell-local" => vec![local(p, body, img, tx)?],
        "ansible" | "ansible-local" => vec![super::ansible::provisioner(p, body, img, tx)?],
        "chef-solo" => vec![super::cm::chef_solo(p, os, body, img, tx)],
        "puppet-masterless" => vec![super::cm::puppet_masterless(p, os, body, img, tx)],
        _ => {
            let mut b = Table::new();
            if let Some(n) = take(body, "note") {
                let to = format!("images.{}.steps.breakpoint.message", img.name);
                tx.put(&mut b, &n, &format!("provisioner {}.note", p.kind), "message", &to);
            }
            vec![step("breakpoint", b)]
        }
    })
}

fn step(kind: &str, body: Table) -> Step {
    Step { comment: None, common: Table::new(), kind: kind.into(), body }
}

/// `pause_before`, `timeout`, `max_retries`, `override`, `name`.
fn common_keys(p: &Plugin, body: &mut Body, common: &mut Table, img: &Image, tx: &mut Tx) {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = |k: &str| format!("images.{}.steps.{k}", img.name);
    if let Some(n) = take(body, "name") {
        tx.put(common, &n, &key("name"), "name", &to("name"));
    }
    if let Some(n) = take(body, "pause_before") {
        let after_reboot = img.steps.last().is_some_and(|s| {
            s.kind == "reboot"
                || s.kind == "windows_update"
                || s.body.get("on_reboot").is_some()
                || s.body.get("expect_reboot").is_some()
        });
        if after_reboot {
            tx.dropped(&n.loc, &key("pause_before"), "it waited out a reboot: imgbake follows the machine's boot identity, so the next step runs only on the new boot, once it is ready");
        } else {
            match duration(&n) {
                Ok(v) => {
                    common.insert("pause_before".into(), v);
                    tx.report(
                        Outcome::Changed,
                        &n.loc,
                        &key("pause_before"),
                        Some(to("pause_before")),
                        "kept; imgbake never needs pauses around reboots, and warns",
                    );
                }
                Err(why) => tx.unmapped(&n.loc, &key("pause_before"), why),
            }
        }
    }
    if let Some(n) = take(body, "timeout") {
        match duration(&n) {
            Ok(v) => {
                common.insert("timeout".into(), v);
                tx.mapped(&n.loc, &key("timeout"), &to("timeout"));
            }
            Err(why) => tx.unmapped(&n.loc, &key("timeout"), why),
        }
    }
    if let Some(n) = take(body, "max_retries") {
        tx.put(common, &n, &key("max_retries"), "retries", &to("retries"));
    }
    if let Some(n) = take(body, "override") {
        tx.unmapped(
            &n.loc,
            &key("override"),
            "per-builder overrides: write one step per builder with `only = [\"aws\"]` / `only = [\"qemu\"]`",
        );
    }
}

/// A script meant for cmd.exe: a batch file, or an execute_command that runs `cmd`.
fn is_cmd(body: &Body) -> bool {
    let exec = body.get("execute_command").and_then(|n| n.str()).unwrap_or_default().to_ascii_lowercase();
    let script_is_batch = ["script", "scripts"].iter().any(|k| {
        body.get(k).and_then(|n| n.strings()).unwrap_or_default().iter().any(|s| {
            let s = s.to_ascii_lowercase();
            s.ends_with(".bat") || s.ends_with(".cmd")
        })
    });
    script_is_batch || exec.contains("cmd /c") || exec.contains("cmd.exe")
}

fn env(p: &Plugin, body: &mut Body, b: &mut Table, img: &Image, tx: &mut Tx) {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = format!("images.{}.steps.{}.env", img.name, p.kind.replace('-', "_"));
    let mut env = toml::Table::new();
    if let Some(n) = take(body, "environment_vars") {
        for item in n.list().unwrap_or_default() {
            match item.str().and_then(|s| s.split_once('=')) {
                Some((k, v)) => {
                    env.insert(k.to_string(), T::String(v.to_string()));
                }
                None => tx.unmapped(
                    &item.loc,
                    &key("environment_vars"),
                    item.unmapped().map(|(_, w)| w).unwrap_or_else(|| "`NAME=value`".into()),
                ),
            }
        }
        tx.report(
            Outcome::Changed,
            &n.loc,
            &key("environment_vars"),
            Some(to.clone()),
            "the environment travels in a 0600 file removed before the command runs, never on a command line",
        );
    }
    if let Some(n) = take(body, "env") {
        match value(&n) {
            Ok(T::Table(t)) => {
                // Environment values are strings (HCL writes numbers and booleans bare).
                env.extend(t.into_iter().map(|(k, v)| match v {
                    T::String(s) => (k, T::String(s)),
                    other => (k, T::String(other.to_string())),
                }));
                tx.mapped(&n.loc, &key("env"), &to);
            }
            Ok(_) => tx.unmapped(&n.loc, &key("env"), "a map of names to values"),
            Err(why) => tx.unmapped(&n.loc, &key("env"), why),
        }
    }
    if !env.is_empty() {
        b.insert("env".into(), T::Table(env));
    }
}

fn scripts(p: &Plugin, body: &mut Body, b: &mut Table, img: &Image, tx: &mut Tx) {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = |k: &str| format!("images.{}.steps.{}.{k}", img.name, p.kind);
    if let Some(n) = take(body, "inline") {
        tx.put(b, &n, &key("inline"), "inline", &to("inline"));
    }
    if let Some(n) = take(body, "script") {
        match n.scalar() {
            Some(s) => {
                b.insert("script".into(), T::String(tx.path(&s)));
                tx.mapped(&n.loc, &key("script"), &to("script"));
            }
            None => tx.unmapped(
                &n.loc,
                &key("script"),
                n.unmapped().map(|(t, w)| format!("`{t}`: {w}")).unwrap_or_else(|| "a path".into()),
            ),
        }
    }
    if let Some(n) = take(body, "scripts") {
        match n.strings() {
            Some(list) => {
                b.insert("scripts".into(), T::Array(list.iter().map(|s| T::String(tx.path(s))).collect()));
                tx.mapped(&n.loc, &key("scripts"), &to("scripts"));
            }
            None => tx.unmapped(
                &n.loc,
                &key("scripts"),
                n.unmapped().map(|(t, w)| format!("`{t}`: {w}")).unwrap_or_else(|| "a list of paths".into()),
            ),
        }
    }
}

/// `shell` and `powershell`.
fn shell(p: &Plugin, body: &mut Body, kind: &str, img: &Image, tx: &mut Tx) -> Step {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = |k: &str| format!("images.{}.steps.{kind}.{k}", img.name);
    let mut b = Table::new();
    scripts(p, body, &mut b, img, tx);
    env(p, body, &mut b, img, tx);
    if let Some(n) = take(body, "valid_exit_codes") {
        tx.put(&mut b, &n, &key("valid_exit_codes"), "valid_exit_codes", &to("valid_exit_codes"));
    }
    if let Some(n) = take(body, "inline_shebang") {
        tx.put(&mut b, &n, &key("inline_shebang"), "shebang", &to("shebang"));
    }
    if let Some(n) = take(body, "expect_disconnect") {
        if n.bool() == Some(true) {
            b.insert("on_reboot".into(), T::String("continue".into()));
            tx.report(
                Outcome::Changed,
                &n.loc,
                &key("expect_disconnect"),
                Some(to("on_reboot")),
                "`on_reboot = \"continue\"`: a reboot under the script is followed by the boot identity and the next step runs on the new boot; if the script always reboots, `expect_reboot = true` says so",
            );
        } else {
            tx.dropped(
                &n.loc,
                &key("expect_disconnect"),
                "false is imgbake's default (an unexpected reboot fails the step)",
            );
        }
    }
    if let Some(n) = take(body, "execute_command") {
        let text = n.str().unwrap_or_default().to_string();
        if kind == "powershell" {
            tx.dropped(
                &n.loc,
                &key("execute_command"),
                "imgbake runs PowerShell with -ExecutionPolicy Bypass, progress bars off, and the script's exit code",
            );
        } else {
            match execute_command(&text) {
                Ok(c) if c == "{{command}}" || c == "sh -c {{quote command}}" => {
                    tx.dropped(&n.loc, &key("execute_command"), "it only ran the script, as imgbake does")
                }
                Ok(c) => {
                    b.insert("execute_command".into(), T::String(c));
                    tx.report(
                        Outcome::Changed,
                        &n.loc,
                        &key("execute_command"),
                        Some(to("execute_command")),
                        "`{{ .Path }}` became `{{quote command}}` (imgbake's command runs the script and reads the environment file); `{{ .Vars }}` is not needed",
                    );
                }
                Err(why) => tx.unmapped(&n.loc, &key("execute_command"), why),
            }
        }
    }
    if let Some(n) = take(body, "elevated_user") {
        b.insert("elevated".into(), T::Boolean(true));
        tx.report(
            Outcome::Changed,
            &n.loc,
            &key("elevated_user"),
            Some(to("elevated")),
            "`elevated = true`: runs as SYSTEM through a scheduled task; no user or password in the tree",
        );
    }
    if let Some(n) = take(body, "elevated_password") {
        tx.dropped(&n.loc, &key("elevated_password"), "elevated steps run as SYSTEM: no password");
    }
    if let Some(n) = take(body, "remote_folder") {
        tx.put(&mut b, &n, &key("remote_folder"), "remote_dir", &to("remote_dir"));
    }
    for k in ["remote_path", "remote_file", "remote_env_var_path"] {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), "imgbake uploads scripts under unique names in `remote_dir` (default /tmp, C:/Windows/Temp) and removes them");
        }
    }
    for (k, why) in [
        ("binary", "scripts are uploaded byte for byte"),
        ("skip_clean", "imgbake removes its scripts, also after a failure"),
        ("start_retry_timeout", "imgbake reconnects after a reboot by itself"),
        ("use_env_var_file", "the environment always travels in a 0600 file"),
        ("env_var_format", "imgbake writes the environment file itself"),
        ("execution_policy", "imgbake runs PowerShell with -ExecutionPolicy Bypass"),
        ("elevated_execute_command", "imgbake runs elevated steps through its own scheduled task"),
    ] {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), why);
        }
    }
    step(kind, b)
}

/// Packer's execute_command as imgbake's: `{{ .Vars }}` goes (the environment is in a file the
/// command reads first), and `{{ .Path }}` becomes the command, quoted where a shell runs it.
pub(crate) fn execute_command(s: &str) -> Result<String, String> {
    let mut c = s.replace("{{vars}} ", "").replace("{{vars}}", "");
    for q in ["'", "\""] {
        c = c.replace(&format!("{q} {{{{path}}}}{q}"), "{{path}}").replace(&format!("{q}{{{{path}}}}{q}"), "{{path}}");
    }
    for chmod in ["chmod +x {{path}};", "chmod +x {{path}} &&", "chmod 755 {{path}};", "chmod 0755 {{path}};"] {
        c = c.replace(chmod, " ");
    }
    let c = c.split_whitespace().collect::<Vec<_>>().join(" ");
    let (before, after) = c.split_once("{{path}}").ok_or("an execute_command without `{{ .Path }}` runs no script")?;
    if after.contains("{{path}}") {
        return Err("`{{ .Path }}` appears more than once".into());
    }
    let words: Vec<&str> = before.split_whitespace().collect();
    let shell_at = words.iter().rposition(|w| matches!(*w, "sh" | "bash" | "/bin/sh" | "/bin/bash" | "/usr/bin/env"));
    let flags_only = shell_at.is_some_and(|i| words[i + 1..].iter().all(|w| w.starts_with('-')));
    let out = if flags_only {
        let has_c = words.last() == Some(&"-c");
        format!("{}{}{{{{quote command}}}}{after}", before, if has_c { "" } else { "-c " })
    } else {
        format!("{before}{{{{command}}}}{after}")
    };
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.contains("{{.") || out.contains("{{ .") {
        return Err("it uses a Packer value other than `{{ .Vars }}` and `{{ .Path }}`".into());
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    let sudo_reads_password = words.iter().enumerate().any(|(i, w)| {
        *w == "sudo"
            && words[i + 1..].iter().take_while(|f| f.starts_with('-')).any(|f| !f.starts_with("--") && f.contains('S'))
    });
    if sudo_reads_password || out.contains("| sudo") {
        return Err(
            "a password piped to `sudo -S` sits on a command line, visible in the machine's process list: give the build user passwordless sudo and use `sudo -n sh -c {{quote command}}`"
                .into(),
        );
    }
    if out.contains("{{ ") {
        return Err("an execute_command may use only {{command}}, {{vars}}, {{workdir}} and {{quote ...}}: write the value into it".into());
    }
    Ok(out)
}

/// A batch file for cmd.exe (a Windows `shell` with a cmd execute_command, or `windows-shell`):
/// a `file` step uploads it, a `powershell` step runs `cmd /c` on it.
fn cmd(p: &Plugin, body: &mut Body, img: &Image, tx: &mut Tx) -> Vec<Step> {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let exec = take(body, "execute_command");
    let exec_text = exec.as_ref().and_then(|n| n.str()).unwrap_or_default().to_string();
    let mut steps = Vec::new();
    let mut commands = Vec::new();
    let mut sources: Vec<(Node, String)> = Vec::new();
    for k in ["script", "scripts"] {
        if let Some(n) = take(body, k) {
            for s in n.strings().unwrap_or_default() {
                sources.push((n.clone(), s));
            }
            tx.mapped(&n.loc, &key(k), &format!("images.{}.steps.file.source", img.name));
        }
    }
    for (n, src) in &sources {
        let base = std::path::Path::new(src)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "script.bat".into());
        // The path the execute_command runs, when it names one; else Windows' temp directory.
        let named = exec_text
            .split_whitespace()
            .find(|w| w.to_ascii_lowercase().ends_with(&base.to_ascii_lowercase()) && w.contains(':'))
            .map(|w| w.trim_matches(['\'', '"']).to_string());
        let dest = named.unwrap_or_else(|| format!("C:/Windows/Temp/{base}"));
        let mut f = Table::new();
        f.insert("source".into(), T::String(tx.path(src)));
        f.insert("destination".into(), T::String(dest.clone()));
        steps.push(step("file", f));
        commands.push(format!("cmd /c \"{dest}\""));
        if base.to_ascii_lowercase().contains("update") {
            tx.report(
                Outcome::Changed,
                &n.loc,
                &key("script"),
                None,
                "consider a `windows_update` step instead of this script: it installs updates and reboots between rounds until none are left",
            );
        }
    }
    if let Some(n) = take(body, "inline") {
        for line in n.strings().unwrap_or_default() {
            // A PowerShell single-quoted string: nothing in it expands; `'` is doubled.
            commands.push(format!("cmd /c '{}'", line.replace('\'', "''")));
        }
        tx.mapped(&n.loc, &key("inline"), &format!("images.{}.steps.powershell.inline", img.name));
    }
    let mut b = Table::new();
    b.insert("inline".into(), T::Array(commands.into_iter().map(T::String).collect()));
    env(p, body, &mut b, img, tx);
    if let Some(n) = take(body, "valid_exit_codes") {
        tx.put(
            &mut b,
            &n,
            &key("valid_exit_codes"),
            "valid_exit_codes",
            &format!("images.{}.steps.powershell.valid_exit_codes", img.name),
        );
    }
    if let Some(n) = exec {
        tx.report(
            Outcome::Changed,
            &n.loc,
            &key("execute_command"),
            Some(format!("images.{}.steps.powershell", img.name)),
            "a cmd.exe execute_command: imgbake uploads the batch file with a `file` step and runs `cmd /c FILE` in a `powershell` step (the batch file's exit code is the step's); `{{ .Vars }}` is not needed, the environment travels in a 0600 file",
        );
    }
    for k in [
        "remote_path",
        "remote_folder",
        "remote_file",
        "binary",
        "skip_clean",
        "start_retry_timeout",
        "expect_disconnect",
    ] {
        if let Some(n) = take(body, k) {
            tx.dropped(
                &n.loc,
                &key(k),
                "the `file` step's destination says where the batch file goes; it is uploaded byte for byte",
            );
        }
    }
    steps.push(step("powershell", b));
    steps
}

fn file(body: &mut Body, img: &Image, tx: &mut Tx) -> Vec<Step> {
    let key = |k: &str| format!("provisioner file.{k}");
    let to = |k: &str| format!("images.{}.steps.file.{k}", img.name);
    let direction_key = take(body, "direction");
    let direction = direction_key.as_ref().and_then(|n| n.scalar()).unwrap_or_else(|| "upload".into());
    if let Some(n) = &direction_key {
        tx.mapped(&n.loc, &key("direction"), &to("direction"));
    }
    let destination = take(body, "destination");
    let mut base = Table::new();
    if direction == "download" {
        base.insert("direction".into(), T::String("download".into()));
    }
    if let Some(d) = &destination {
        let v = d.scalar().unwrap_or_default();
        let v = if direction == "download" { tx.path(&v) } else { v };
        base.insert("destination".into(), T::String(v));
        tx.mapped(&d.loc, &key("destination"), &to("destination"));
    }
    let mut sources = Vec::new();
    for k in ["source", "sources"] {
        if let Some(n) = take(body, k) {
            sources.extend(n.strings().unwrap_or_default());
            tx.mapped(&n.loc, &key(k), &to("source"));
        }
    }
    if let Some(n) = take(body, "content") {
        let mut b = base.clone();
        if tx.put(&mut b, &n, &key("content"), "content", &to("content")) {
            return vec![step("file", b)];
        }
    }
    if let Some(n) = take(body, "generated") {
        tx.dropped(
            &n.loc,
            &key("generated"),
            "imgbake checks upload sources when validating; a file made by an earlier `local` step must exist by then",
        );
    }
    sources
        .into_iter()
        .map(|s| {
            let mut b = Table::new();
            let src = if direction == "download" { s } else { tx.path(&s) };
            b.insert("source".into(), T::String(src));
            b.extend(base.clone());
            step("file", b)
        })
        .collect()
}

fn restart(p: &Plugin, body: &mut Body, img: &Image, tx: &mut Tx) -> Step {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = |k: &str| format!("images.{}.steps.reboot.{k}", img.name);
    let mut b = Table::new();
    if let Some(n) = take(body, "restart_command") {
        tx.put(&mut b, &n, &key("restart_command"), "command", &to("command"));
    }
    if let Some(n) = take(body, "restart_check_command")
        && tx.put(&mut b, &n, &key("restart_check_command"), "readiness", &to("readiness"))
    {
        tx.report(
            Outcome::Changed,
            &n.loc,
            &key("restart_check_command"),
            Some(to("readiness")),
            "must succeed (exit 0) for the machine to count as back; imgbake already waits for a new boot identity",
        );
    }
    if let Some(n) = take(body, "restart_timeout") {
        match duration(&n) {
            Ok(v) => {
                b.insert("timeout".into(), v);
                tx.mapped(&n.loc, &key("restart_timeout"), &to("timeout"));
            }
            Err(why) => tx.unmapped(&n.loc, &key("restart_timeout"), why),
        }
    }
    if let Some(n) = take(body, "check_registry") {
        tx.dropped(
            &n.loc,
            &key("check_registry"),
            "imgbake's Windows reboot waits until no reboot is pending (Component Based Servicing, Windows Update)",
        );
    }
    for k in ["registry_keys"] {
        if let Some(n) = take(body, k) {
            tx.unmapped(&n.loc, &key(k), "write a `readiness` command that tests these keys");
        }
    }
    step("reboot", b)
}

fn windows_update(p: &Plugin, body: &mut Body, img: &Image, tx: &mut Tx) -> Step {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = |k: &str| format!("images.{}.steps.windows_update.{k}", img.name);
    let mut b = Table::new();
    if let Some(n) = take(body, "search_criteria") {
        tx.put(&mut b, &n, &key("search_criteria"), "search_criteria", &to("search_criteria"));
    }
    if let Some(n) = take(body, "filters") {
        let (mut exclude, mut other) = (Vec::new(), Vec::new());
        for f in n.strings().unwrap_or_default() {
            let f = f.trim().to_string();
            match f.strip_prefix("exclude:$_.Title -like ").map(|p| p.trim_matches(['\'', '"']).to_string()) {
                Some(p) => exclude.push(T::String(p)),
                None if f == "include:$true" => {}
                None => other.push(format!("`{f}`")),
            }
        }
        if !exclude.is_empty() {
            b.insert("exclude".into(), T::Array(exclude));
        }
        // One line for the key: unmapped when any filter is left behind.
        if other.is_empty() {
            tx.mapped(&n.loc, &key("filters"), &to("exclude"));
        } else {
            let why = format!(
                "{}: only `exclude:$_.Title -like '...'` carries over (as `exclude` patterns)",
                other.join(", ")
            );
            tx.unmapped(&n.loc, &key("filters"), why);
        }
    }
    for (k, why) in [
        ("update_limit", "imgbake installs everything found in each round"),
        ("restart_timeout", "each round's reboot follows the boot identity (30m limit, or the step's `timeout`)"),
    ] {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), why);
        }
    }
    step("windows_update", b)
}

fn local(p: &Plugin, body: &mut Body, img: &Image, tx: &mut Tx) -> Option<Step> {
    let key = |k: &str| format!("provisioner {}.{k}", p.kind);
    let to = format!("images.{}.steps.local.command", img.name);
    let mut commands = Vec::new();
    for k in ["command", "inline"] {
        if let Some(n) = take(body, k) {
            match n.strings() {
                Some(c) => {
                    commands.extend(c);
                    tx.mapped(&n.loc, &key(k), &to);
                }
                None => tx.unmapped(
                    &n.loc,
                    &key(k),
                    n.unmapped().map(|(t, w)| format!("`{t}`: {w}")).unwrap_or_else(|| "a command".into()),
                ),
            }
        }
    }
    for k in ["script", "scripts"] {
        if let Some(n) = take(body, k) {
            commands.extend(n.strings().unwrap_or_default().iter().map(|s| format!("sh {}", tx.path(s))));
            tx.mapped(&n.loc, &key(k), &to);
        }
    }
    if commands.is_empty() {
        return None;
    }
    let mut b = Table::new();
    b.insert("command".into(), T::String(commands.join("\n")));
    env(p, body, &mut b, img, tx);
    for k in ["execute_command", "only_on", "use_linux_pathing", "inline_shebang", "valid_exit_codes", "env_var_format"]
    {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), "a `local` step runs its command with `sh -c` in the tree's directory");
        }
    }
    Some(step("local", b))
}

#[cfg(test)]
mod tests {
    use super::execute_command as ec;

    #[test]
    fn execute_commands_keep_their_wrapper() {
        // A password for sudo would sit on a command line: refused, literal or a variable.
        assert!(ec("echo 'packer' | sudo -S sh -c '{{vars}} {{path}}'").unwrap_err().contains("passwordless sudo"));
        assert!(ec("echo '{{ var.pw }}' | sudo -E -S sh -c '{{vars}} {{path}}'").is_err());
        assert_eq!(ec("{{vars}} sudo -E sh '{{path}}'").unwrap(), "sudo -E sh -c {{quote command}}");
        assert_eq!(ec("chmod +x {{path}}; {{vars}} {{path}}").unwrap(), "{{command}}");
        assert_eq!(ec("sudo -E bash -eux '{{path}}'").unwrap(), "sudo -E bash -eux -c {{quote command}}");
        assert!(ec("{{vars}} run").is_err());
    }
}
