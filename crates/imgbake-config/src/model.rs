//! The typed model of a rendered tree: what `tree.toml` means once variables are substituted.
//!
//! Values that a later error may need to point at are `Spanned`, so a builder can say "the AMI filter
//! at images/tree.toml:12:10 matched nothing".

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::os::Os;
use crate::schema::{Parsed, Publish, Source};
use crate::units::Duration;

/// Tree-wide settings (`[settings]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The tree's name; tags artifacts with `imgbake:tree` so several trees can share an account.
    pub name: Option<String>,
    /// The tree's unique id; tags everything a cloud builder creates with `imgbake:tree-id`, so
    /// `plan`, `prune` and `clean` only ever see this tree's resources (two trees may share a name).
    /// Required for trees with an image of a builder that asks for it (cloud builders such as `aws`).
    pub id: Option<Spanned<String>>,
    /// Where `build` writes the manifest (relative to the tree file). Default `imgbake-manifest.json`.
    pub manifest: Option<Spanned<String>>,
    /// Where the cleanup journal and other local state live (relative to the tree file). Default `.imgbake`.
    pub state_dir: Option<Spanned<String>>,
    /// How many images build at once. Default 4.
    pub parallel: Option<u32>,
}

/// One image of the tree (`[images.NAME]`), after defaults are merged in.
#[derive(Clone, Debug, Serialize)]
pub struct Image {
    /// Its name (the key under `[images]`).
    pub name: String,
    /// The builders that produce it (e.g. `aws`, `qemu`).
    pub builders: Vec<Spanned<String>>,
    /// What it is, for people.
    pub description: Option<String>,
    /// The image it is built from; its artifact becomes this image's source.
    pub parent: Option<Spanned<String>>,
    /// Where the first image of a chain starts (each builder reads its own keys).
    pub source: Option<Spanned<Source>>,
    /// How to reach the build machine.
    pub communicator: Communicator,
    /// What to do on the machine, in order.
    pub steps: Vec<Step>,
    /// Tags (labels) put on the artifact.
    pub tags: BTreeMap<String, String>,
    /// Rebuild when the artifact is older than this, even if nothing changed.
    pub max_age: Option<Spanned<Duration>>,
    /// How many artifacts to keep when pruning (the newest).
    pub keep: Option<Spanned<u32>>,
    /// Where to announce the newest artifact once its tests pass.
    pub publish: Option<Publish>,
    /// Each builder's settings (`[images.NAME.BUILDER]` over the parent's over `[defaults.BUILDER]`),
    /// parsed by its [`BuilderSchema`](crate::BuilderSchema), by builder name. Not serialized: a
    /// fingerprint takes only the settings of the builder it is for.
    #[serde(skip)]
    pub builder_settings: BTreeMap<String, Parsed>,
    /// Builders of this image that start from a disk file its parent made with another builder
    /// (builder → the parent's builder), set by validation (see
    /// [`BuilderSchema::imports_disk`](crate::BuilderSchema::imports_disk)).
    #[serde(skip)]
    pub imports: BTreeMap<String, String>,
    /// Clean the machine of the build before capture (the `sanitize` phase). `None` means on.
    pub sanitize: Option<bool>,
    /// Where `[images.NAME]` is.
    #[serde(skip)]
    pub span: crate::Span,
}

impl Image {
    /// Does this image build with `builder`?
    pub fn has_builder(&self, builder: &str) -> bool {
        self.builders.iter().any(|b| b.get_ref() == builder)
    }

    /// The parent's builder whose artifact this image starts from when built with `builder`: the same
    /// builder, unless it imports a disk another builder made.
    pub fn parent_builder<'a>(&'a self, builder: &'a str) -> &'a str {
        self.imports.get(builder).map(String::as_str).unwrap_or(builder)
    }

    /// Does this image, built with `builder`, start from a disk file (no machine, no steps)?
    pub fn imports_disk(&self, builder: &str) -> bool {
        self.imports.contains_key(builder)
    }

    /// `builder`'s settings of this image, as the type its schema parsed them into; `None` when the
    /// image has no table for it (or `T` is not that type).
    pub fn settings<T: 'static>(&self, builder: &str) -> Option<&T> {
        self.builder_settings.get(builder).and_then(Parsed::get)
    }

    /// The steps that run for `builder` (after `only` / `except`).
    pub fn steps_for<'a>(&'a self, builder: &'a str) -> impl Iterator<Item = (usize, &'a Step)> + 'a {
        self.steps.iter().enumerate().filter(move |(_, s)| s.runs_on(builder)).map(|(i, s)| (i + 1, s))
    }
}

/// How the builder waits for, reaches and trusts the build machine.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Communicator {
    /// Only `ssh` today.
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// The machine's OS family: `linux` (default) or `windows`.
    pub os: Option<Os>,
    /// Login user.
    pub username: Option<Spanned<String>>,
    /// Password (prefer keys; mark the variable it comes from `sensitive`).
    pub password: Option<String>,
    /// Connect to this host instead of the address the builder finds (e.g. a tunnel, or tests).
    pub host: Option<String>,
    /// SSH port. Default 22.
    pub port: Option<u16>,
    /// Use this private key instead of a key generated for the build.
    pub private_key_file: Option<Spanned<String>>,
    /// How to trust the machine's host key: `pinned` (default; the builder injects a fresh host key and
    /// pins it), `known_hosts`, or `insecure` (accept any key, with a warning).
    pub host_key: Option<Spanned<String>>,
    /// The known_hosts file for `host_key = "known_hosts"`.
    pub known_hosts_file: Option<Spanned<String>>,
    /// How long to wait for the machine to accept SSH the first time. Default 10m.
    pub timeout: Option<Duration>,
    /// Keepalive interval: a dead peer is noticed after about 3 of these. Default 5s.
    pub keepalive: Option<Duration>,
    /// The command printing the boot identity (default per OS).
    pub boot_id_command: Option<String>,
    /// Default `execute_command` for every step (e.g. `sudo -n env {{vars}} sh -c {{quote command}}`).
    /// An empty string means the OS default (useful to undo a wrapper set in `[defaults]`).
    pub execute_command: Option<String>,
    /// Reach the machine through this jump host.
    pub bastion: Option<Bastion>,
}

/// A jump host.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bastion {
    /// Its address.
    pub host: Spanned<String>,
    /// Its SSH port. Default 22.
    pub port: Option<u16>,
    /// Login user.
    pub username: Spanned<String>,
    /// Private key file.
    pub private_key_file: Option<Spanned<String>>,
    /// Password.
    pub password: Option<String>,
    /// `known_hosts` (default), `pinned` with `host_public_key`, or `insecure`.
    pub host_key: Option<Spanned<String>>,
    /// The bastion's public host key (OpenSSH line) for `host_key = "pinned"`.
    pub host_public_key: Option<String>,
    /// known_hosts file for `host_key = "known_hosts"`.
    pub known_hosts_file: Option<Spanned<String>>,
}

/// An artifact store (`[stores.NAME]`): where images publish their files and where a child built
/// elsewhere finds its parent's. See docs/stores.md. Its `Debug` hides the credentials given
/// directly.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// Its name (the key under `[stores]`).
    #[serde(skip)]
    pub name: String,
    /// `http` (Artifactory-style PUT/GET/HEAD) or `s3`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// `http`: the base URL, e.g. `https://artifactory.example.com/artifactory/images`.
    pub url: Option<Spanned<String>>,
    /// `s3`: the bucket.
    pub bucket: Option<Spanned<String>>,
    /// A key prefix under `url` or in the bucket (e.g. `images/`).
    pub prefix: Option<String>,
    /// `s3`: the bucket's region (default: the AWS environment's).
    pub region: Option<String>,
    /// `s3`: another endpoint (MinIO, a test server); path-style addressing then.
    pub endpoint_url: Option<String>,
    /// `http` basic auth: the environment variable holding the user name.
    pub username_env: Option<Spanned<String>>,
    /// `http` basic auth: the environment variable holding the password.
    pub password_env: Option<Spanned<String>>,
    /// `http` bearer auth: the environment variable holding the token.
    pub token_env: Option<Spanned<String>>,
    /// `http` basic auth user name, given directly.
    pub username: Option<String>,
    /// `http` basic auth password, given directly (from a `sensitive` variable).
    pub password: Option<String>,
    /// `http` bearer token, given directly (from a `sensitive` variable).
    pub token: Option<String>,
    /// Where `[stores.NAME]` is.
    #[serde(skip)]
    pub span: crate::Span,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| crate::REDACTED);
        f.debug_struct("Store")
            .field("name", &self.name)
            .field("kind", self.kind.get_ref())
            .field("url", &self.url.as_ref().map(|u| u.get_ref()))
            .field("bucket", &self.bucket.as_ref().map(|b| b.get_ref()))
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("username_env", &self.username_env.as_ref().map(|v| v.get_ref()))
            .field("password_env", &self.password_env.as_ref().map(|v| v.get_ref()))
            .field("token_env", &self.token_env.as_ref().map(|v| v.get_ref()))
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .finish()
    }
}

/// One step, with the settings every kind shares.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// A name for output and errors (default: kind and position, e.g. `shell #2`).
    pub name: Option<String>,
    /// Run only with these builders.
    pub only: Vec<Spanned<String>>,
    /// Never run with these builders.
    pub except: Vec<Spanned<String>>,
    /// Fail the step after this long.
    pub timeout: Option<Duration>,
    /// Run it again this many times when it fails (with backoff).
    pub retries: u32,
    /// Wait this long before the step (Packer compatibility; imgbake does not need it for reboots).
    pub pause_before: Option<Spanned<Duration>>,
    /// Whether running the step twice is harmless (`idempotent`); `None`: the kind's default, see
    /// [`Step::is_idempotent`].
    pub idempotent: Option<bool>,
    /// What it does.
    pub kind: StepKind,
    /// Where it is in the file.
    #[serde(skip)]
    pub span: crate::Span,
}

impl Step {
    /// Does this step run with `builder`?
    pub fn runs_on(&self, builder: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|b| b.get_ref() == builder))
            && !self.except.iter().any(|b| b.get_ref() == builder)
    }

    /// May the step run again when the machine's boot ended under it or right after it? Its
    /// `idempotent` key, else true for `reboot`, `file` and `test`, false for the other kinds.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent.unwrap_or(matches!(self.kind, StepKind::Reboot(_) | StepKind::File(_) | StepKind::Test(_)))
    }

    /// The step's name for output: its `name`, or `KIND #N`.
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("{} #{index}", self.kind.kind()))
    }
}

/// The kinds of steps.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Run shell commands or scripts.
    Shell(Shell),
    /// Copy files to or from the machine.
    File(FileStep),
    /// Run PowerShell on Windows.
    Powershell(Powershell),
    /// Restart the machine and wait until it is back and settled.
    Reboot(Reboot),
    /// Install Windows updates, rebooting until none are pending.
    WindowsUpdate(WindowsUpdate),
    /// Run an on-box test suite; a failure fails the build.
    Test(TestStep),
    /// Run a command on the machine running imgbake.
    Local(Local),
    /// Pause until Enter is pressed (only with `--debug`/interactive runs).
    Breakpoint(Breakpoint),
    /// Run an Ansible playbook from the machine running imgbake against the build machine.
    Ansible(crate::ansible::Ansible),
    /// Upload an Ansible playbook and run it on the build machine itself.
    AnsibleLocal(crate::ansible::AnsibleLocal),
    /// Run Chef Infra Client (or Cinc) in solo mode with cookbooks from the tree.
    ChefSolo(crate::cm::ChefSolo),
    /// Run masterless `puppet apply` with a manifest, modules and Hiera data from the tree.
    PuppetApply(crate::cm::PuppetApply),
    /// Compile and apply a PowerShell DSC configuration on Windows.
    PowershellDsc(crate::cm::PowershellDsc),
}

impl StepKind {
    /// The kind's key in the tree file.
    pub fn kind(&self) -> &'static str {
        match self {
            StepKind::Shell(_) => "shell",
            StepKind::File(_) => "file",
            StepKind::Powershell(_) => "powershell",
            StepKind::Reboot(_) => "reboot",
            StepKind::WindowsUpdate(_) => "windows_update",
            StepKind::Test(_) => "test",
            StepKind::Local(_) => "local",
            StepKind::Breakpoint(_) => "breakpoint",
            StepKind::Ansible(_) => "ansible",
            StepKind::AnsibleLocal(_) => "ansible_local",
            StepKind::ChefSolo(_) => "chef_solo",
            StepKind::PuppetApply(_) => "puppet_apply",
            StepKind::PowershellDsc(_) => "powershell_dsc",
        }
    }
}

/// The names of all step kinds, for messages.
pub const STEP_KINDS: &[&str] = &[
    "shell",
    "file",
    "powershell",
    "reboot",
    "windows_update",
    "test",
    "local",
    "breakpoint",
    "ansible",
    "ansible_local",
    "chef_solo",
    "puppet_apply",
    "powershell_dsc",
];

/// What to do when the machine reboots on its own during a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReboot {
    /// Fail the step (default unless `expect_reboot`).
    #[default]
    Fail,
    /// Treat the step as done and go on.
    Continue,
    /// Run the step again from the start.
    Rerun,
}

/// `shell = { ... }`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Shell {
    /// Commands, run as one script.
    #[serde(default)]
    pub inline: Vec<String>,
    /// A script file to upload and run.
    pub script: Option<Spanned<String>>,
    /// Several script files, run in order.
    #[serde(default)]
    pub scripts: Vec<Spanned<String>>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wrapper template (see the communicator docs), e.g. `sudo -n env {{vars}} sh -c {{quote command}}`.
    pub execute_command: Option<Spanned<String>>,
    /// The interpreter line put on top of `inline` commands. Default `#!/bin/sh -e`.
    pub shebang: Option<String>,
    /// Exit codes that count as success. Default `[0]`.
    pub valid_exit_codes: Option<Vec<i32>>,
    /// The script reboots the machine: a disconnect followed by a new boot identity is success.
    #[serde(default)]
    pub expect_reboot: bool,
    /// What an unexpected reboot during the step means.
    pub on_reboot: Option<OnReboot>,
    /// Where scripts are uploaded. Default `/tmp`.
    pub remote_dir: Option<String>,
}

/// Which way a `file` step copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Local → machine (default).
    #[default]
    Upload,
    /// Machine → local.
    Download,
}

/// `file = { ... }`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileStep {
    /// The local file or directory (upload), or the remote path (download).
    pub source: Option<Spanned<String>>,
    /// Literal content to write (upload only), instead of `source`.
    pub content: Option<String>,
    /// Where it goes.
    pub destination: Spanned<String>,
    /// `upload` (default) or `download`.
    #[serde(default)]
    pub direction: Direction,
    /// File mode for `content`, octal text like `"0644"`. Default `"0644"`.
    pub mode: Option<Spanned<String>>,
}

/// `powershell = { ... }`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Powershell {
    /// Commands, run as one script.
    #[serde(default)]
    pub inline: Vec<String>,
    /// A script file to upload and run.
    pub script: Option<Spanned<String>>,
    /// Several script files, run in order.
    #[serde(default)]
    pub scripts: Vec<Spanned<String>>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run elevated (as a scheduled task under SYSTEM) for installers that refuse a network logon.
    #[serde(default)]
    pub elevated: bool,
    /// Exit codes that count as success. Default `[0]`.
    pub valid_exit_codes: Option<Vec<i32>>,
    /// The script reboots the machine.
    #[serde(default)]
    pub expect_reboot: bool,
    /// What an unexpected reboot during the step means.
    pub on_reboot: Option<OnReboot>,
    /// Wrapper template for the PowerShell invocation.
    pub execute_command: Option<Spanned<String>>,
    /// Where scripts are uploaded. Default `C:/Windows/Temp`.
    pub remote_dir: Option<String>,
}

/// How a reboot is triggered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootMethod {
    /// Run the reboot command on the machine (default).
    #[default]
    Command,
    /// Ask the platform (EC2 RebootInstances, QEMU system_reset).
    Platform,
}

/// `reboot = { ... }`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reboot {
    /// The reboot command (default per OS).
    pub command: Option<String>,
    /// `command` (default) or `platform`.
    #[serde(default)]
    pub method: RebootMethod,
    /// A command that must succeed before the machine counts as ready (e.g. no pending reboot).
    pub readiness: Option<String>,
    /// How long the new boot identity and readiness must hold; reboots within it are followed.
    pub settle: Option<Duration>,
    /// Give up after this long. Default 30m.
    pub timeout: Option<Duration>,
}

/// `windows_update = { ... }`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsUpdate {
    /// Windows Update search criteria. Default `IsInstalled=0 and IsHidden=0`.
    pub search_criteria: Option<String>,
    /// Title patterns to skip (`*` wildcards).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Stop after this many install-and-reboot rounds. Default 10.
    pub max_rounds: Option<u32>,
}

/// `test = { ... }`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestStep {
    /// A local directory of tests to upload first.
    pub source: Option<Spanned<String>>,
    /// Where the tests go on the machine. Default `/tmp/imgbake-tests` (Windows: `C:/Windows/Temp/imgbake-tests`).
    pub destination: Option<String>,
    /// The command that runs the tests, in the tests' directory.
    pub command: Spanned<String>,
    /// A JUnit XML report the command writes, fetched and parsed (relative to the tests' directory).
    pub report: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wrapper template.
    pub execute_command: Option<Spanned<String>>,
    /// Leave the tests on the image so they can be run again later. Default false.
    #[serde(default)]
    pub keep: bool,
}

/// `local = { ... }`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Local {
    /// The command, run with `sh -c` in the tree file's directory.
    pub command: Spanned<String>,
    /// Environment variables (added to the build's values, `IMGBAKE_*`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `breakpoint = { ... }`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Breakpoint {
    /// Shown while paused.
    pub message: Option<String>,
}

/// A variable declaration (`[variables]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    /// The value when none is given.
    pub default: Option<toml::Value>,
    /// What it is for.
    pub description: Option<String>,
    /// Redact its value from all output and logs.
    #[serde(default)]
    pub sensitive: bool,
}

/// The rendered tree.
#[derive(Clone, Debug)]
pub struct TreeModel {
    /// Tree-wide settings.
    pub settings: Settings,
    /// Artifact stores (`[stores.NAME]`), in file order.
    pub stores: IndexMap<String, Store>,
    /// Release channels (`[channels.NAME]`, `candidate` added when any is declared), in file order.
    pub channels: IndexMap<String, crate::channels::Channel>,
    /// The staleness audit's settings (`[audit]`).
    pub audit: crate::audit::Audit,
    /// Images in file order.
    pub images: IndexMap<String, Image>,
}
