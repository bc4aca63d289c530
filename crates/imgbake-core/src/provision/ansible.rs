//! `ansible` and `ansible_local`: configuration management with Ansible.
//!
//! `ansible` runs `ansible-playbook` on the machine running imgbake against the build machine, over the
//! communicator's own SSH settings ([`crate::ssh_access::SshAccess`]): everything it needs goes in a
//! private temporary directory (0700, removed on every path when the step ends):
//! - `inventory.json`: the machine as one host (`host_alias`, default `default`) with its address,
//!   port, user and login key, in the step's `groups`;
//! - `id_login` (0600): the login key — copied from its file, or written out in OpenSSH format when
//!   the build's key only lives in memory;
//! - `known_hosts`: exactly the key imgbake pinned (or the image's known_hosts file is used), with
//!   `StrictHostKeyChecking=yes`: Ansible trusts what imgbake trusts and nothing else;
//! - `vars.json` (0600): `extra_vars` plus `imgbake_image`, `imgbake_builder`, `imgbake_build_id`,
//!   passed as `-e @vars.json` — values may be sensitive, so they never go on a command line;
//! - `roles/`, `collections/`: what `ansible-galaxy install -r galaxy_file` installs, for this run only.
//!
//! A bastion becomes a `ProxyCommand` running `ssh -W` with the bastion's own key and host key, checked
//! the same way. Output streams as step output (the tree's secrets redacted); a non-zero exit fails
//! the step.
//!
//! `ansible_local` uploads the playbooks (or `playbook_dir`) to a 0700 staging directory on the
//! machine, installs Ansible there if missing (`install`), and runs `ansible-playbook -c local -i
//! localhost,` with the variables in an uploaded 0600 file; the staging directory is removed afterwards.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use imgbake_config::{Ansible, AnsibleLocal, Os, Span, Spanned};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::Ctx;
use super::local::{GroupGuard, wait_in_time};
use super::remote::{Ran, RebootPolicy, remote_join};
use crate::command::quote;
use crate::communicator::{ExecRequest, ExecStatus};
use crate::error::{BuildError, ErrorKind};
use crate::event::{EventSink, LineSplitter, Stream};
use crate::ssh_access::{SshAccess, SshHostKeys, SshIdentity};

/// `ansible-playbook`'s exit codes, for the failure message. (Its playbook runs end with 4 for an
/// unreachable host, the code its documentation gives parser errors; both are said.)
fn exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "an error",
        2 => "one or more tasks failed",
        3 => "the machine was unreachable",
        4 => "the machine was unreachable, or the playbook did not parse",
        5 => "bad or incomplete options",
        99 => "interrupted",
        250 => "an unexpected error",
        _ => "a failure",
    }
}

/// How long an idle shared SSH connection of Ansible's lingers after the run if closing it fails.
const CONTROL_PERSIST: &str = "15s";

/// The step's private directory on this machine; removed (with the key and the variables) when dropped,
/// so also when the step fails, times out or the build is cancelled.
struct Private {
    dir: tempfile::TempDir,
}

impl Private {
    fn new() -> std::io::Result<Self> {
        // tempfile makes the directory 0700.
        Ok(Private { dir: tempfile::Builder::new().prefix("imgbake-ansible-").tempdir()? })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file only its owner can read.
    fn write_private(&self, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
        let p = self.path(name);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p)?;
        f.write_all(data)?;
        f.sync_all()?;
        Ok(p)
    }
}

/// Values Ansible always gets: where the build is.
fn build_vars(cx: &Ctx<'_>) -> serde_json::Map<String, serde_json::Value> {
    let v = &cx.runner.cx.values;
    let mut m = serde_json::Map::new();
    for (var, key) in [
        ("imgbake_image", "IMGBAKE_IMAGE"),
        ("imgbake_builder", "IMGBAKE_BUILDER"),
        ("imgbake_build_id", "IMGBAKE_BUILD_ID"),
    ] {
        if let Some(val) = v.get(key) {
            m.insert(var.into(), serde_json::Value::String(val.clone()));
        }
    }
    m
}

fn vars_json(
    cx: &Ctx<'_>,
    extra: &BTreeMap<String, impl serde::Serialize>,
    more: serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<u8>, BuildError> {
    let mut m = build_vars(cx);
    m.extend(more);
    for (k, v) in extra {
        let j = serde_json::to_value(v)
            .map_err(|e| cx.fail(ErrorKind::Config, format!("extra_vars.{k} cannot be passed to Ansible: {e}")))?;
        m.insert(k.clone(), j);
    }
    serde_json::to_vec_pretty(&serde_json::Value::Object(m))
        .map_err(|e| cx.fail(ErrorKind::Internal, format!("encoding the variables: {e}")))
}

/// The arguments both kinds pass the same way.
fn common_args(
    tags: &[Spanned<String>],
    skip_tags: &[Spanned<String>],
    become_: bool,
    become_user: Option<&Spanned<String>>,
    extra: &[Spanned<String>],
) -> Vec<String> {
    let mut args = Vec::new();
    let join = |t: &[Spanned<String>]| t.iter().map(|s| s.get_ref().as_str()).collect::<Vec<_>>().join(",");
    if !tags.is_empty() {
        args.extend(["--tags".to_string(), join(tags)]);
    }
    if !skip_tags.is_empty() {
        args.extend(["--skip-tags".to_string(), join(skip_tags)]);
    }
    if become_ {
        args.push("--become".into());
    }
    if let Some(u) = become_user {
        args.extend(["--become-user".to_string(), u.get_ref().clone()]);
    }
    args.extend(extra.iter().map(|a| a.get_ref().clone()));
    args
}

/// A program named by a step: a path relative to the tree file when it has a `/`, else a name looked
/// up on `PATH`.
fn program(cx: &Ctx<'_>, v: Option<&Spanned<String>>, default: &str) -> PathBuf {
    match v {
        Some(s) if s.get_ref().contains('/') => cx.tree().path(s),
        Some(s) => PathBuf::from(s.get_ref()),
        None => PathBuf::from(default),
    }
}

/// `ansible-galaxy`: the step's, else the one beside `ansible-playbook` when that is a path, else on PATH.
fn galaxy_program(cx: &Ctx<'_>, galaxy: Option<&Spanned<String>>, playbook_cmd: &Path) -> PathBuf {
    if galaxy.is_some() {
        return program(cx, galaxy, "ansible-galaxy");
    }
    match playbook_cmd.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join("ansible-galaxy"),
        None => PathBuf::from("ansible-galaxy"),
    }
}

/// Refuse connections Ansible could not make as safely as imgbake does.
fn usable(cx: &Ctx<'_>, a: &SshAccess, what: &str) -> Result<(), BuildError> {
    if a.identity.is_none() {
        return Err(cx.fail(
            ErrorKind::Config,
            format!(
                "{what} logs in with a password only; the ansible step needs a key login (set communicator.private_key_file, \
                 or use a builder that installs a key of its own)"
            ),
        ));
    }
    if a.host_keys == SshHostKeys::Insecure {
        return Err(cx.fail(
            ErrorKind::Config,
            format!(
                "{what} uses host_key = \"insecure\"; the ansible step only connects with the host key checked \
                 (StrictHostKeyChecking=yes): use the default `pinned` policy or `known_hosts`"
            ),
        ));
    }
    Ok(())
}

/// `host` as known_hosts names it.
fn known_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// Key file and known_hosts file for one hop, written into the private directory.
fn hop_files(cx: &Ctx<'_>, p: &Private, a: &SshAccess, prefix: &str) -> Result<(PathBuf, PathBuf), BuildError> {
    let io = |what: &str, e: std::io::Error| cx.fail(ErrorKind::Local, format!("{what}: {e}"));
    let key = match &a.identity {
        // A copy: ssh refuses a key file others can read, and the user's may be 0644.
        Some(SshIdentity::File(f)) => {
            let data = std::fs::read(f).map_err(|e| io(&format!("reading the login key {}", f.display()), e))?;
            p.write_private(&format!("{prefix}id"), &data).map_err(|e| io("writing the login key", e))?
        }
        Some(SshIdentity::OpenSsh(k)) => {
            p.write_private(&format!("{prefix}id"), k.as_bytes()).map_err(|e| io("writing the login key", e))?
        }
        None => return Err(cx.fail(ErrorKind::Config, "no login key")),
    };
    let known = match &a.host_keys {
        SshHostKeys::Pinned(keys) => {
            let name = known_name(&a.host, a.port);
            let text: String = keys.iter().map(|k| format!("{name} {}\n", k.trim())).collect();
            p.write_private(&format!("{prefix}known_hosts"), text.as_bytes())
                .map_err(|e| io("writing known_hosts", e))?
        }
        SshHostKeys::KnownHosts(f) => f.clone(),
        SshHostKeys::Insecure => return Err(cx.fail(ErrorKind::Config, "insecure host key policy")),
    };
    Ok((key, known))
}

/// The `-o` options that make `ssh` check the host key against `known` and log in with `key` only.
fn strict_options(key: Option<&Path>, known: &Path) -> Vec<String> {
    let mut o = vec![
        format!("UserKnownHostsFile={}", known.display()),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        "UpdateHostKeys=no".to_string(),
        "BatchMode=yes".to_string(),
    ];
    if let Some(k) = key {
        o.push(format!("IdentityFile={}", k.display()));
        o.push("IdentitiesOnly=yes".to_string());
    }
    o
}

fn dash_o(opts: &[String]) -> String {
    opts.iter().map(|o| format!("-o {}", quote(Os::Linux, o))).collect::<Vec<_>>().join(" ")
}

/// Everything the run needs on this machine.
struct Prepared {
    private: Private,
    inventory: PathBuf,
    vars: PathBuf,
}

fn prepare(cx: &Ctx<'_>, a: &Ansible) -> Result<Prepared, BuildError> {
    let access = cx.comm.ssh_access().ok_or_else(|| {
        cx.fail(ErrorKind::Config, "this build's communicator does not talk SSH, which the ansible step needs")
    })?;
    usable(cx, &access, "the build's connection")?;
    if let Some(b) = &access.bastion {
        usable(cx, b, "the bastion")?;
    }
    let private = Private::new()
        .map_err(|e| cx.fail(ErrorKind::Local, format!("cannot create a private temporary directory: {e}")))?;
    let (key, known) = hop_files(cx, &private, &access, "")?;
    let mut opts = strict_options(None, &known);
    if let Some(b) = &access.bastion {
        let (bkey, bknown) = hop_files(cx, &private, b, "bastion_")?;
        // The jump goes through the bastion with its own key and its own checked host key.
        let proxy = format!(
            "ssh {} -p {} -W %h:%p {}",
            dash_o(&strict_options(Some(&bkey), &bknown)),
            b.port,
            quote(Os::Linux, &format!("{}@{}", b.user, b.host))
        );
        opts.push(format!("ProxyCommand={proxy}"));
    }
    let ssh_args = dash_o(&opts);
    let alias = a.host_alias.as_ref().map(|h| h.get_ref().clone()).unwrap_or_else(|| "default".into());
    let mut host = serde_json::json!({
        "ansible_connection": "ssh",
        "ansible_host": access.host,
        "ansible_port": access.port,
        "ansible_user": access.user,
        "ansible_ssh_private_key_file": key,
        "ansible_ssh_common_args": ssh_args,
        "ansible_python_interpreter": a.python_interpreter.clone().unwrap_or_else(|| "auto".into()),
    });
    if let Some(h) = host.as_object_mut() {
        h.retain(|_, v| !v.is_null());
    }
    let mut children = serde_json::Map::new();
    for g in &a.groups {
        children.insert(g.get_ref().clone(), serde_json::json!({ "hosts": { alias.clone(): {} } }));
    }
    let inventory = serde_json::json!({ "all": { "hosts": { alias.clone(): host }, "children": children } });
    let inventory = private
        .write_private("inventory.json", inventory.to_string().as_bytes())
        .map_err(|e| cx.fail(ErrorKind::Local, format!("writing the inventory: {e}")))?;
    // Extra variables outrank every other source: the host key check and the login cannot be undone
    // by a host_vars file next to the playbook.
    let mut pinned = serde_json::Map::new();
    pinned.insert("ansible_ssh_common_args".into(), serde_json::Value::String(ssh_args.clone()));
    pinned.insert("ansible_host_key_checking".into(), serde_json::Value::Bool(true));
    pinned.insert("ansible_ssh_host_key_checking".into(), serde_json::Value::Bool(true));
    pinned.insert("ansible_ssh_private_key_file".into(), serde_json::Value::String(key.display().to_string()));
    let vars = vars_json(cx, &a.extra_vars, pinned)?;
    let vars = private
        .write_private("vars.json", &vars)
        .map_err(|e| cx.fail(ErrorKind::Local, format!("writing the variables file: {e}")))?;
    Ok(Prepared { private, inventory, vars })
}

/// A search path with `first` in front of what the step's `env`, else imgbake's environment, else
/// Ansible's default has.
fn path_with(first: &Path, step_env: &BTreeMap<String, String>, env_var: &str, default: &str) -> String {
    let rest =
        step_env.get(env_var).cloned().or_else(|| std::env::var(env_var).ok()).unwrap_or_else(|| default.to_string());
    format!("{}:{rest}", first.display())
}

pub(crate) async fn run(cx: &Ctx<'_>, a: &Ansible) -> Result<(), BuildError> {
    let p = prepare(cx, a)?;
    let cmd = program(cx, a.command.as_ref(), "ansible-playbook");
    let dir = cx.tree().sources().resolve(cx.step.span, ".");
    let roles = p.private.path("roles");
    let collections = p.private.path("collections");
    let control = p.private.path("cm");
    let mut env: Vec<(String, String)> = cx.runner.cx.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend(a.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Set last, over the step's env: these keep the connection as imgbake checks it and the output
    // plain. (ANSIBLE_HOST_KEY_CHECKING=False would add StrictHostKeyChecking=no before our options,
    // and ssh takes the first value of an option.)
    env.extend(
        [
            ("ANSIBLE_HOST_KEY_CHECKING", "True".to_string()),
            (
                "ANSIBLE_SSH_ARGS",
                format!(
                    "-o ControlMaster=auto -o ControlPersist={CONTROL_PERSIST} -o {}",
                    quote(Os::Linux, &format!("ControlPath={}", control.display()))
                ),
            ),
            ("ANSIBLE_NOCOLOR", "1".to_string()),
            ("ANSIBLE_FORCE_COLOR", "0".to_string()),
            ("ANSIBLE_RETRY_FILES_ENABLED", "False".to_string()),
            ("ANSIBLE_LOCAL_TEMP", p.private.path("tmp").display().to_string()),
            (
                "ANSIBLE_ROLES_PATH",
                path_with(
                    &roles,
                    &a.env,
                    "ANSIBLE_ROLES_PATH",
                    "~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles",
                ),
            ),
            (
                "ANSIBLE_COLLECTIONS_PATH",
                path_with(
                    &collections,
                    &a.env,
                    "ANSIBLE_COLLECTIONS_PATH",
                    "~/.ansible/collections:/usr/share/ansible/collections",
                ),
            ),
            ("PYTHONUNBUFFERED", "1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    if let Some(g) = &a.galaxy_file {
        let file = cx.readable_local(g, "the galaxy file ")?;
        let galaxy = galaxy_program(cx, a.galaxy_command.as_ref(), &cmd);
        let gdir = file.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.clone());
        cx.events.info(format!("installing Galaxy requirements from {} into the run's private paths", file.display()));
        let mut c = Command::new(&galaxy);
        c.arg("install").arg("-r").arg(&file).current_dir(&gdir).envs(env.iter().map(|(k, v)| (k, v)));
        let (status, _) = run_host(cx, c, &galaxy).await?;
        if !status.success() {
            return Err(cx.fail(
                ErrorKind::Step,
                format!(
                    "`{} install -r {}` {}; see its output above (the requirements must be reachable from this machine)",
                    galaxy.display(),
                    g.get_ref(),
                    describe(status)
                ),
            ));
        }
    }
    let mut c = Command::new(&cmd);
    c.arg("-i").arg(&p.inventory).arg("-e").arg(format!("@{}", p.vars.display()));
    c.args(common_args(&a.tags, &a.skip_tags, a.become_, a.become_user.as_ref(), &a.extra_arguments));
    for pb in a.all_playbooks() {
        c.arg(cx.readable_local(pb, "the playbook ")?);
    }
    c.current_dir(&dir).envs(env.iter().map(|(k, v)| (k, v)));
    let access = cx.comm.ssh_access();
    cx.events.info(format!(
        "running {} against {} (host key checked: {})",
        cmd.display(),
        cx.comm.target(),
        match access.as_ref().map(|a| &a.host_keys) {
            Some(SshHostKeys::Pinned(_)) => "pinned key",
            _ => "known_hosts",
        }
    ));
    let ran = run_host(cx, c, &cmd).await;
    close_control(&control).await;
    let (status, seen) = ran?;
    if status.success() {
        return Ok(());
    }
    let mut msg = format!("`{}` {}", cmd.display(), describe(status));
    match status.code() {
        Some(_) if seen.unreachable => msg.push_str(" (the machine was unreachable)"),
        Some(c) => msg.push_str(&format!(" ({})", exit_meaning(c))),
        None => {}
    }
    if seen.host_key_failed {
        msg.push_str(
            "; the machine's SSH host key is not the one imgbake trusts (Host key verification failed): \
             the connection was refused rather than trust an unknown key",
        );
    } else {
        msg.push_str("; see the failed task and PLAY RECAP in its output above");
    }
    Err(cx.fail(ErrorKind::Step, msg))
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(c) => format!("exited with code {c}"),
        None => format!("was killed ({status})"),
    }
}

/// Ask Ansible's shared SSH connection (if one is still open) to end now rather than linger.
async fn close_control(control: &Path) {
    if !control.exists() {
        return;
    }
    let mut c = Command::new("ssh");
    c.arg("-o")
        .arg(format!("ControlPath={}", control.display()))
        .args(["-O", "exit", "imgbake-ansible"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // Closing is best effort: the master ends by itself after ControlPersist anyway.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), c.status()).await;
}

/// What the output showed, for the failure message.
#[derive(Default)]
struct Seen {
    host_key_failed: bool,
    unreachable: bool,
}

async fn pump(mut r: impl AsyncRead + Unpin, stream: Stream, events: EventSink, seen: Arc<Mutex<Seen>>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = LineSplitter::default();
    let emit = |l: &str| {
        if let Ok(mut s) = seen.lock() {
            s.host_key_failed |= l.contains("Host key verification failed");
            s.unreachable |= l.contains("UNREACHABLE!");
        }
        events.output(stream, l);
    };
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for l in lines.push(&buf[..n]) {
                    emit(&l);
                }
            }
        }
    }
    if let Some(l) = lines.flush() {
        emit(&l);
    }
}

/// Run a program on this machine in a process group of its own, streaming its output as the step's,
/// within the step's timeout (then the whole group is stopped).
async fn run_host(cx: &Ctx<'_>, mut cmd: Command, what: &Path) -> Result<(ExitStatus, Seen), BuildError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (not found: install Ansible, e.g. `pip install ansible-core`, or set the step's `command` to its path)"
        } else {
            ""
        };
        cx.fail(ErrorKind::Local, format!("cannot run {}: {e}{hint}", what.display()))
    })?;
    let guard = GroupGuard(child.id().map(|p| p as i32));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = child.stdout.take().map(|o| tokio::spawn(pump(o, Stream::Stdout, cx.events.clone(), seen.clone())));
    let err = child.stderr.take().map(|e| tokio::spawn(pump(e, Stream::Stderr, cx.events.clone(), seen.clone())));
    let status = wait_in_time(cx, &mut child, guard, [out, err], &what.display().to_string()).await?;
    let seen = seen
        .lock()
        .map(|s| Seen { host_key_failed: s.host_key_failed, unreachable: s.unreachable })
        .unwrap_or_default();
    Ok((status, seen))
}

/// The default `install` of `ansible_local`: Debian's ansible-core, through sudo unless root.
pub const DEFAULT_INSTALL: &str = "if [ \"$(id -u)\" = 0 ]; then s=; else s='sudo -n'; fi; \
     $s env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
     $s env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ansible-core";

pub(crate) async fn run_local(cx: &Ctx<'_>, a: &AnsibleLocal) -> Result<(), BuildError> {
    if cx.os() == Os::Windows {
        return Err(cx.fail(ErrorKind::Config, "ansible_local cannot run on Windows machines"));
    }
    let execute_command = cx.execute_command(a.execute_command.as_ref());
    let staging = a.staging_dir.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("/tmp/imgbake-ansible-{}", &id[..12])
    });
    let q = |s: &str| quote(Os::Linux, s);
    // 0700: the variables file inside may hold secrets.
    cx.housekeeping(format!("umask 077 && mkdir -p {0} && chmod 700 {0}", q(&staging)), None)
        .await
        .map_err(|e| cx.fail(ErrorKind::Communicator, format!("cannot create the staging directory {staging}: {e}")))?;
    let r = run_staged(cx, a, &staging, execute_command.clone()).await;
    // Removed on every path: it holds the variables file. Through the step's wrapper: a run under
    // sudo may leave root's files in it.
    cx.remove_remote(&staging, execute_command).await;
    r
}

async fn run_staged(
    cx: &Ctx<'_>,
    a: &AnsibleLocal,
    staging: &str,
    execute_command: Option<String>,
) -> Result<(), BuildError> {
    let q = |s: &str| quote(Os::Linux, s);
    let cmd = a.command.as_ref().map(|c| c.get_ref().clone()).unwrap_or_else(|| "ansible-playbook".into());
    ensure_installed(cx, a, &cmd, execute_command.clone()).await?;

    // The playbooks: playbook_dir whole (they are inside it), else each file alone.
    let mut remote_playbooks = Vec::new();
    let workdir;
    match &a.playbook_dir {
        Some(d) => {
            let local = cx.readable_local(d, "the playbook directory ")?;
            let remote = remote_join(staging, "playbooks");
            cx.transfer("uploading the playbook directory", || cx.comm.upload(&local, &remote, &cx.events)).await?;
            for pb in a.all_playbooks() {
                let path = cx.tree().path(pb);
                let rel = strip_lexically(&path, &local).ok_or_else(|| {
                    cx.fail(ErrorKind::Config, format!("playbook {} is not inside playbook_dir", pb.get_ref()))
                        .at(Span::new(pb.span()))
                })?;
                remote_playbooks.push(remote_join(&remote, &rel));
            }
            workdir = remote;
        }
        None => {
            let mut names = std::collections::BTreeSet::new();
            for pb in a.all_playbooks() {
                let local = cx.readable_local(pb, "the playbook ")?;
                let name = local
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "playbook.yml".into());
                let name = if names.insert(name.clone()) { name } else { format!("{}-{name}", names.len()) };
                let remote = remote_join(staging, &name);
                cx.transfer("uploading the playbook", || cx.comm.upload(&local, &remote, &cx.events)).await?;
                remote_playbooks.push(remote);
            }
            workdir = staging.to_string();
        }
    }
    let mut more = serde_json::Map::new();
    if let Some(pi) = &a.python_interpreter {
        more.insert("ansible_python_interpreter".into(), serde_json::Value::String(pi.clone()));
    }
    let vars = vars_json(cx, &a.extra_vars, more)?;
    let vars_path = remote_join(staging, "vars.json");
    cx.transfer("uploading the variables file", || cx.comm.upload_bytes(&vars, &vars_path, 0o600)).await?;

    let roles = remote_join(staging, "roles");
    let collections = remote_join(staging, "collections");
    let mut env: Vec<(String, String)> = a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend(
        [
            ("ANSIBLE_NOCOLOR", "1".to_string()),
            ("ANSIBLE_FORCE_COLOR", "0".to_string()),
            ("ANSIBLE_RETRY_FILES_ENABLED", "False".to_string()),
            (
                "ANSIBLE_ROLES_PATH",
                format!("{roles}:{workdir}/roles:~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles"),
            ),
            (
                "ANSIBLE_COLLECTIONS_PATH",
                format!("{collections}:~/.ansible/collections:/usr/share/ansible/collections"),
            ),
            ("PYTHONUNBUFFERED", "1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );

    if let Some(g) = &a.galaxy_file {
        let local = cx.readable_local(g, "the galaxy file ")?;
        let remote = remote_join(staging, "requirements.yml");
        cx.transfer("uploading the galaxy file", || cx.comm.upload(&local, &remote, &cx.events)).await?;
        let galaxy =
            a.galaxy_command.as_ref().map(|g| g.get_ref().clone()).unwrap_or_else(|| match cmd.rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/ansible-galaxy"),
                None => "ansible-galaxy".into(),
            });
        let req = ExecRequest {
            command: format!("{} install -r {}", q(&galaxy), q(&remote)),
            env: env.clone(),
            workdir: Some(workdir.clone()),
            execute_command: execute_command.clone(),
            ..ExecRequest::default()
        };
        let out = exec(cx, &req, staging).await?;
        cx.check_exit(&format!("`{galaxy} install -r`"), &out, &[0])?;
    }

    let mut words = vec![
        q(&cmd),
        "-c".into(),
        "local".into(),
        "-i".into(),
        "localhost,".into(),
        "-e".into(),
        q(&format!("@{vars_path}")),
    ];
    words.extend(
        common_args(&a.tags, &a.skip_tags, a.become_, a.become_user.as_ref(), &a.extra_arguments).iter().map(|w| q(w)),
    );
    words.extend(remote_playbooks.iter().map(|p| q(p)));
    let req = ExecRequest {
        command: words.join(" "),
        env,
        workdir: Some(workdir),
        execute_command,
        ..ExecRequest::default()
    };
    let out = exec(cx, &req, staging).await?;
    match out.status {
        ExecStatus::Exited(0) => Ok(()),
        ExecStatus::Exited(c) => Err(cx.fail(
            ErrorKind::Step,
            format!("`{cmd}` on the machine exited with code {c} ({}); see the failed task and PLAY RECAP in its output above", exit_meaning(c)),
        )),
        status => Err(cx.fail(ErrorKind::Step, format!("`{cmd}` on the machine {status}"))),
    }
}

/// Run on the machine with the environment in a 0600 file (see [`super::shell::exec_with_env`]).
async fn exec(cx: &Ctx<'_>, req: &ExecRequest, staging: &str) -> Result<crate::communicator::ExecOutput, BuildError> {
    match super::shell::exec_with_env(cx, req, staging, RebootPolicy::default(), &[0]).await? {
        Ran::Exited(out) => Ok(out),
        Ran::Rebooted | Ran::Rerun => Err(cx.fail(
            ErrorKind::Step,
            "the machine rebooted during the Ansible run, so it is not done; run the step again (set `retries`)",
        )),
    }
}

/// `command` on the machine, installing it with `install` when missing.
async fn ensure_installed(
    cx: &Ctx<'_>,
    a: &AnsibleLocal,
    cmd: &str,
    execute_command: Option<String>,
) -> Result<(), BuildError> {
    let probe = format!("command -v {} >/dev/null 2>&1", quote(Os::Linux, cmd));
    if cx.housekeeping(probe.clone(), execute_command.clone()).await.is_ok() {
        return Ok(());
    }
    let install = a.install.clone().unwrap_or_else(|| DEFAULT_INSTALL.to_string());
    if install.trim().is_empty() {
        return Err(cx.fail(
            ErrorKind::Step,
            format!("`{cmd}` is not on the machine and `install` is empty; install Ansible in an earlier step or set `install`"),
        ));
    }
    cx.events.info(format!("`{cmd}` is not on the machine; installing Ansible"));
    let req = ExecRequest { command: install, execute_command: execute_command.clone(), ..ExecRequest::default() };
    let out = match cx.exec_guarded(&req, RebootPolicy::default(), &[0]).await? {
        Ran::Exited(out) => out,
        _ => return Err(cx.fail(ErrorKind::Step, "the machine rebooted while Ansible was being installed")),
    };
    cx.check_exit("installing Ansible (`install`)", &out, &[0])?;
    if cx.housekeeping(probe, execute_command).await.is_err() {
        return Err(cx.fail(
            ErrorKind::Step,
            format!(
                "`{cmd}` is still not found on the machine after `install` ran; set `command` to where it installs it"
            ),
        ));
    }
    Ok(())
}

/// `path` relative to `dir`, comparing them as written (`.` and `..` resolved), `/`-separated.
fn strip_lexically(path: &Path, dir: &Path) -> Option<String> {
    fn norm(p: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }
    let rel = norm(path).strip_prefix(norm(dir)).ok()?.to_path_buf();
    Some(rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_names_follow_openssh() {
        assert_eq!(known_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(known_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }

    #[test]
    fn strict_options_never_turn_checking_off() {
        let o = strict_options(Some(Path::new("/k")), Path::new("/d/known hosts"));
        assert!(o.contains(&"StrictHostKeyChecking=yes".to_string()));
        assert!(!o.iter().any(|x| x.contains("=no") && x.starts_with("StrictHostKeyChecking")));
        assert_eq!(dash_o(&o[..1]), "-o 'UserKnownHostsFile=/d/known hosts'");
    }

    #[test]
    fn playbooks_inside_the_dir() {
        assert_eq!(
            strip_lexically(Path::new("/t/./pb/../pb/site.yml"), Path::new("/t/pb")).as_deref(),
            Some("site.yml")
        );
        assert_eq!(strip_lexically(Path::new("/t/other.yml"), Path::new("/t/pb")), None);
    }

    #[test]
    fn exit_codes_are_explained() {
        assert_eq!(exit_meaning(2), "one or more tasks failed");
        assert!(exit_meaning(4).contains("unreachable"));
    }
}
