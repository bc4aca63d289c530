//! The `ansible` and `ansible_local` step kinds: their keys, their offline checks, and the local files
//! they make part of an image's fingerprint.
//!
//! Kept in a file of their own so other step kinds can be added beside them without touching this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::Tree;
use crate::diag::Diagnostic;
use crate::load::span_of;
use crate::validate::{local_path, one_of_at};

/// `ansible = { ... }`: run `ansible-playbook` on the machine running imgbake against the build
/// machine, over the build's own SSH settings (login key, pinned host key, bastion).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ansible {
    /// The playbook (relative to the tree file).
    pub playbook: Option<Spanned<String>>,
    /// Several playbooks, run in order in one `ansible-playbook` run.
    #[serde(default)]
    pub playbooks: Vec<Spanned<String>>,
    /// The directory holding the playbooks' roles, vars and files. Its whole content is part of the
    /// image's fingerprint. Default: each playbook's directory (or, when that directory holds the tree
    /// file, only its Ansible directories: `roles`, `group_vars`, `host_vars`, `files`, `templates`,
    /// `vars`, `tasks`, `handlers`, `library`, `filter_plugins`, `module_utils`, `collections`).
    pub playbook_dir: Option<Spanned<String>>,
    /// The `ansible-playbook` program: a path (relative to the tree file) or a name on `PATH`.
    /// Default `ansible-playbook`.
    pub command: Option<Spanned<String>>,
    /// The `ansible-galaxy` program. Default: `ansible-galaxy` beside `command`, else on `PATH`.
    pub galaxy_command: Option<Spanned<String>>,
    /// A Galaxy requirements file (roles and collections), installed with `ansible-galaxy install -r`
    /// into a private directory used for this run only.
    pub galaxy_file: Option<Spanned<String>>,
    /// Variables for the playbook (any TOML value). Passed in a 0600 JSON file (`-e @file`), never on
    /// the command line: values may be sensitive.
    #[serde(default)]
    pub extra_vars: BTreeMap<String, toml::Value>,
    /// Run only tasks with these tags.
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
    /// Skip tasks with these tags.
    #[serde(default)]
    pub skip_tags: Vec<Spanned<String>>,
    /// Run the tasks with privilege escalation (`--become`, sudo by default).
    #[serde(default, rename = "become")]
    pub become_: bool,
    /// Become this user (`--become-user`). Needs `become`.
    pub become_user: Option<Spanned<String>>,
    /// More arguments for `ansible-playbook` (e.g. `["-v", "--diff"]`). Arguments that would change
    /// the connection (inventory, user, key, SSH options) are refused.
    #[serde(default)]
    pub extra_arguments: Vec<Spanned<String>>,
    /// Environment variables for `ansible-playbook` (e.g. `ANSIBLE_STDOUT_CALLBACK`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `ansible_python_interpreter` on the machine. Default `auto`.
    pub python_interpreter: Option<String>,
    /// The machine's name in the generated inventory. Default `default`.
    pub host_alias: Option<Spanned<String>>,
    /// Inventory groups the machine is put in.
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
}

/// `ansible_local = { ... }`: upload the playbook (or its directory) to the machine and run
/// `ansible-playbook -c local -i localhost,` there.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnsibleLocal {
    /// The playbook (relative to the tree file).
    pub playbook: Option<Spanned<String>>,
    /// Several playbooks, run in order.
    #[serde(default)]
    pub playbooks: Vec<Spanned<String>>,
    /// A directory uploaded whole (roles, vars, files); the playbooks must be inside it. Without it
    /// only the playbook files are uploaded.
    pub playbook_dir: Option<Spanned<String>>,
    /// `ansible-playbook` on the machine. Default `ansible-playbook`.
    pub command: Option<Spanned<String>>,
    /// `ansible-galaxy` on the machine. Default `ansible-galaxy` beside `command`.
    pub galaxy_command: Option<Spanned<String>>,
    /// Run on the machine when `command` is not found there. Default: install Debian's
    /// `ansible-core` with apt-get (through `sudo -n` unless logged in as root). An empty string
    /// means never install (the step fails when Ansible is missing).
    pub install: Option<String>,
    /// A Galaxy requirements file, uploaded and installed on the machine before the run.
    pub galaxy_file: Option<Spanned<String>>,
    /// Variables for the playbook, in a 0600 JSON file uploaded for the run and deleted after it.
    #[serde(default)]
    pub extra_vars: BTreeMap<String, toml::Value>,
    /// Run only tasks with these tags.
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
    /// Skip tasks with these tags.
    #[serde(default)]
    pub skip_tags: Vec<Spanned<String>>,
    /// `--become`.
    #[serde(default, rename = "become")]
    pub become_: bool,
    /// `--become-user`. Needs `become`.
    pub become_user: Option<Spanned<String>>,
    /// More arguments for `ansible-playbook`.
    #[serde(default)]
    pub extra_arguments: Vec<Spanned<String>>,
    /// Environment variables for `ansible-playbook` on the machine.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `ansible_python_interpreter`. Default `auto`.
    pub python_interpreter: Option<String>,
    /// Where the playbooks are uploaded. Default: a fresh directory under `/tmp`, removed afterwards.
    pub staging_dir: Option<String>,
    /// Wrapper template for the commands (e.g. `sudo -n env {{vars}} sh -c {{quote command}}`).
    pub execute_command: Option<Spanned<String>>,
}

/// Arguments that would replace the connection imgbake sets up (inventory, user, key, SSH options)
/// or that would put variables on the command line.
const CONNECTION_ARGS: &[&str] = &[
    "-i",
    "--inventory",
    "--inventory-file",
    "-c",
    "--connection",
    "-u",
    "--user",
    "--private-key",
    "--key-file",
    "--ssh-common-args",
    "--ssh-extra-args",
    "--scp-extra-args",
    "--sftp-extra-args",
    "-k",
    "--ask-pass",
    "-l",
    "--limit",
];

/// What both kinds share, for checks.
struct Common<'a> {
    kind: &'static str,
    playbook: Option<&'a Spanned<String>>,
    playbooks: &'a [Spanned<String>],
    playbook_dir: Option<&'a Spanned<String>>,
    galaxy_file: Option<&'a Spanned<String>>,
    tags: &'a [Spanned<String>],
    skip_tags: &'a [Spanned<String>],
    become_: bool,
    become_user: Option<&'a Spanned<String>>,
    extra_arguments: &'a [Spanned<String>],
    extra_vars: &'a BTreeMap<String, toml::Value>,
    groups: &'a [Spanned<String>],
    host_alias: Option<&'a Spanned<String>>,
}

impl Ansible {
    /// The playbooks in run order (`playbook`, then `playbooks`).
    pub fn all_playbooks(&self) -> Vec<&Spanned<String>> {
        self.playbook.iter().chain(&self.playbooks).collect()
    }

    fn common(&self) -> Common<'_> {
        Common {
            kind: "ansible",
            playbook: self.playbook.as_ref(),
            playbooks: &self.playbooks,
            playbook_dir: self.playbook_dir.as_ref(),
            galaxy_file: self.galaxy_file.as_ref(),
            tags: &self.tags,
            skip_tags: &self.skip_tags,
            become_: self.become_,
            become_user: self.become_user.as_ref(),
            extra_arguments: &self.extra_arguments,
            extra_vars: &self.extra_vars,
            groups: &self.groups,
            host_alias: self.host_alias.as_ref(),
        }
    }
}

impl AnsibleLocal {
    /// The playbooks in run order (`playbook`, then `playbooks`).
    pub fn all_playbooks(&self) -> Vec<&Spanned<String>> {
        self.playbook.iter().chain(&self.playbooks).collect()
    }

    fn common(&self) -> Common<'_> {
        Common {
            kind: "ansible_local",
            playbook: self.playbook.as_ref(),
            playbooks: &self.playbooks,
            playbook_dir: self.playbook_dir.as_ref(),
            galaxy_file: self.galaxy_file.as_ref(),
            tags: &self.tags,
            skip_tags: &self.skip_tags,
            become_: self.become_,
            become_user: self.become_user.as_ref(),
            extra_arguments: &self.extra_arguments,
            extra_vars: &self.extra_vars,
            groups: &[],
            host_alias: None,
        }
    }
}

/// Offline checks of an `ansible` step.
pub(crate) fn check_ansible(
    tree: &Tree,
    w: &str,
    span: crate::Span,
    a: &Ansible,
    os: crate::Os,
    diags: &mut Vec<Diagnostic>,
) {
    if os == crate::Os::Windows {
        diags.push(
            Diagnostic::at(span, format!("{w}: ansible steps do not support Windows machines yet"))
                .help("Ansible reaches Windows over WinRM or SSH with PowerShell, which imgbake does not set up; use `powershell` steps, or run Ansible from a `local` step"),
        );
    }
    if let Some(c) = &a.command
        && c.get_ref().trim().is_empty()
    {
        diags.push(
            Diagnostic::at(span_of(c), format!("{w}: `command` is empty"))
                .help("leave it out to use `ansible-playbook` from PATH"),
        );
    }
    check_common(tree, w, span, &a.common(), diags);
}

/// Offline checks of an `ansible_local` step.
pub(crate) fn check_ansible_local(
    tree: &Tree,
    w: &str,
    span: crate::Span,
    a: &AnsibleLocal,
    os: crate::Os,
    diags: &mut Vec<Diagnostic>,
) {
    if os == crate::Os::Windows {
        diags.push(
            Diagnostic::at(span, format!("{w}: ansible_local cannot run on Windows machines"))
                .help("Ansible's control node does not run on Windows; use `powershell` steps"),
        );
    }
    if let Some(e) = &a.execute_command {
        crate::validate::template_check(e, diags);
    }
    let c = a.common();
    check_common(tree, w, span, &c, diags);
    // Without a playbook_dir only the playbook files go up: one inside the dir is what runs there.
    if let Some(d) = &a.playbook_dir {
        let dir = tree.path(d);
        for p in a.all_playbooks() {
            if !lexically_inside(&tree.path(p), &dir) {
                diags.push(
                    Diagnostic::at(
                        span_of(p),
                        format!("{w}: playbook `{}` is not inside playbook_dir `{}`", p.get_ref(), d.get_ref()),
                    )
                    .help("playbook_dir is uploaded whole and the playbooks run from it: move the playbook into it"),
                );
            }
        }
    }
}

fn check_common(tree: &Tree, w: &str, span: crate::Span, c: &Common<'_>, diags: &mut Vec<Diagnostic>) {
    one_of_at(
        span,
        c.playbooks.first().map(span_of),
        &format!("{w} ({})", c.kind),
        &[("playbook", c.playbook.is_some()), ("playbooks", !c.playbooks.is_empty())],
        diags,
    );
    for p in c.playbook.iter().copied().chain(c.playbooks) {
        local_path(tree, p, "playbook", false, diags);
    }
    if let Some(d) = c.playbook_dir {
        local_path(tree, d, "playbook_dir", true, diags);
        if tree.project.check_files && tree.path(d).is_file() {
            diags.push(
                Diagnostic::at(span_of(d), format!("{w}: playbook_dir `{}` is a file", d.get_ref()))
                    .help("name the directory holding the playbook"),
            );
        }
    }
    if let Some(g) = c.galaxy_file {
        local_path(tree, g, "galaxy_file", false, diags);
    }
    for (key, tags) in [("tags", c.tags), ("skip_tags", c.skip_tags)] {
        for t in tags {
            let v = t.get_ref();
            if v.trim().is_empty() || v.contains(',') || v.chars().any(char::is_whitespace) {
                diags
                    .push(Diagnostic::at(span_of(t), format!("{w}: `{v}` in {key} is not a tag")).help(
                        "one tag per list item, without commas or spaces, e.g. tags = [\"packages\", \"users\"]",
                    ));
            }
        }
    }
    if let Some(u) = c.become_user {
        if !c.become_ {
            diags.push(
                Diagnostic::at(span_of(u), format!("{w}: become_user has no effect without become = true"))
                    .help("add `become = true`"),
            );
        }
        if u.get_ref().trim().is_empty() {
            diags.push(Diagnostic::at(span_of(u), format!("{w}: become_user is empty")));
        }
    }
    for a in c.extra_arguments {
        let v = a.get_ref().as_str();
        let flag = v.split_once('=').map_or(v, |(f, _)| f);
        // Short flags may carry their value glued on (`-iinventory`).
        let short_glued = !flag.starts_with("--") && flag.len() > 2 && CONNECTION_ARGS.contains(&&flag[..2]);
        if CONNECTION_ARGS.contains(&flag) || short_glued {
            diags.push(
                Diagnostic::at(
                    span_of(a),
                    format!("{w}: extra argument `{flag}` would replace the connection imgbake sets up"),
                )
                .help("imgbake writes the inventory, login key and pinned host key itself; see docs/steps.md#ansible"),
            );
        } else if flag == "-e" || flag == "--extra-vars" || (flag.starts_with("-e") && !flag.starts_with("--")) {
            diags.push(
                Diagnostic::at(
                    span_of(a),
                    format!("{w}: pass variables with `extra_vars`, not `{flag}` in extra_arguments"),
                )
                .help("extra_vars go in a private 0600 file, so sensitive values never show on a command line"),
            );
        }
    }
    for k in c.extra_vars.keys() {
        if !valid_var_name(k) {
            diags.push(
                Diagnostic::at(span, format!("{w}: `{k}` in extra_vars is not an Ansible variable name"))
                    .help("letters, digits and `_`, not starting with a digit"),
            );
        }
    }
    for g in c.groups.iter().chain(c.host_alias) {
        if !valid_var_name(g.get_ref()) && !g.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            diags.push(
                Diagnostic::at(span_of(g), format!("{w}: `{}` is not an inventory name", g.get_ref()))
                    .help("use letters, digits, `-`, `_` and `.`"),
            );
        }
    }
}

fn valid_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `path` is `dir` or below it, comparing the paths as written (after removing `.` and `..`).
fn lexically_inside(path: &Path, dir: &Path) -> bool {
    normalize(path).starts_with(normalize(dir))
}

fn normalize(p: &Path) -> PathBuf {
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

/// The directories Ansible reads next to a playbook.
pub const ANSIBLE_DIRS: &[&str] = &[
    "roles",
    "group_vars",
    "host_vars",
    "files",
    "templates",
    "vars",
    "tasks",
    "handlers",
    "library",
    "filter_plugins",
    "module_utils",
    "collections",
];

/// The local files and directories an Ansible step uses, for the image's fingerprint: the playbooks,
/// the galaxy file, and `playbook_dir` — or, without it, each playbook's directory. A directory that
/// holds a tree file (its state, its manifest) would change at every build: from it only the
/// [`ANSIBLE_DIRS`] that exist count.
pub(crate) fn fingerprint_files(
    tree: &Tree,
    playbooks: &[&Spanned<String>],
    playbook_dir: Option<&Spanned<String>>,
    galaxy_file: Option<&Spanned<String>>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = playbooks.iter().map(|p| tree.path(p)).collect();
    out.extend(galaxy_file.map(|g| tree.path(g)));
    let dirs: Vec<PathBuf> = match playbook_dir {
        Some(d) => vec![tree.path(d)],
        None => {
            let mut v: Vec<PathBuf> =
                playbooks.iter().filter_map(|p| tree.path(p).parent().map(Path::to_path_buf)).collect();
            v.sort();
            v.dedup();
            v
        }
    };
    let tree_dirs: Vec<PathBuf> = tree.sources().files().iter().map(|f| normalize(f.dir())).collect();
    for d in dirs {
        let holds_tree = tree_dirs.iter().any(|t| t.starts_with(normalize(&d)));
        if holds_tree {
            out.extend(ANSIBLE_DIRS.iter().map(|s| d.join(s)).filter(|p| p.is_dir()));
        } else if d.is_dir() {
            out.push(d);
        }
    }
    out
}
