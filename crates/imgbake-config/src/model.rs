//! The typed model of a rendered tree: what `tree.toml` means once variables are substituted.
//!
//! Values that a later error may need to point at are `Spanned`, so a builder can say "the AMI filter
//! at images/tree.toml:12:10 matched nothing".

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::os::Os;
use crate::units::{Duration, Size};

/// Tree-wide settings (`[settings]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The tree's name; tags artifacts with `imgbake:tree` so several trees can share an account.
    pub name: Option<String>,
    /// The tree's unique id; tags everything a cloud builder creates with `imgbake:tree-id`, so
    /// `plan`, `prune` and `clean` only ever see this tree's resources (two trees may share a name).
    /// Required for trees with an `aws` image.
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
    /// The builders that produce it (`aws`, `qemu`, ...).
    pub builders: Vec<Spanned<String>>,
    /// What it is, for people.
    pub description: Option<String>,
    /// The image it is built from; its artifact becomes this image's source.
    pub parent: Option<Spanned<String>>,
    /// Where the first image of a chain starts (per builder kind).
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
    /// Settings of the `aws` builder.
    pub aws: Option<AwsSettings>,
    /// Settings of the `qemu` builder.
    pub qemu: Option<QemuSettings>,
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

    /// The steps that run for `builder` (after `only` / `except`).
    pub fn steps_for<'a>(&'a self, builder: &'a str) -> impl Iterator<Item = (usize, &'a Step)> + 'a {
        self.steps.iter().enumerate().filter(move |(_, s)| s.runs_on(builder)).map(|(i, s)| (i + 1, s))
    }
}

/// Where a chain starts. Each builder reads the keys it knows: `ami`, `ami_filter`, `ssm_parameter`
/// for `aws`; `disk` for `qemu`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// An AMI id (`aws`).
    pub ami: Option<Spanned<String>>,
    /// Find the AMI by name, tags, owners (`aws`).
    pub ami_filter: Option<Spanned<AmiFilter>>,
    /// Read the AMI id from an SSM parameter, e.g. `/aws/service/debian/release/12/latest/amd64` (`aws`).
    pub ssm_parameter: Option<Spanned<String>>,
    /// A disk image file, qcow2 or raw (`qemu`), relative to the tree file.
    pub disk: Option<Spanned<String>>,
    /// A kernel to boot directly instead of the disk's boot loader (`qemu`).
    pub kernel: Option<Spanned<String>>,
    /// The initrd for `kernel` (`qemu`).
    pub initrd: Option<Spanned<String>>,
    /// The kernel command line for `kernel` (`qemu`).
    pub append: Option<String>,
}

/// An AMI search.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AmiFilter {
    /// Name pattern (`*` wildcards), e.g. `debian-12-amd64-*`.
    pub name: Option<String>,
    /// Owner account ids or aliases (`amazon`, `self`). Required: an unowned filter can match anyone's AMI.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Tags the AMI must have.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `x86_64` or `arm64`.
    pub architecture: Option<String>,
    /// Any other EC2 DescribeImages filter, name → values.
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<String>>,
    /// With several matches, take the newest (otherwise several matches are an error).
    #[serde(default)]
    pub most_recent: bool,
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

/// Where to announce an image's newest artifact after its tests pass.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// SSM parameter holding the AMI id, e.g. `/images/web/latest`, in every region the AMI is in.
    pub ssm_parameter: Option<Spanned<String>>,
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
        }
    }
}

/// The names of all step kinds, for messages.
pub const STEP_KINDS: &[&str] =
    &["shell", "file", "powershell", "reboot", "windows_update", "test", "local", "breakpoint"];

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

/// Settings of the `aws` builder (`[images.NAME.aws]`, defaults in `[defaults.aws]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region the build runs in.
    pub region: Option<Spanned<String>>,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    /// Role to assume for the build.
    pub assume_role_arn: Option<String>,
    /// Endpoint override for EC2, SSM and STS (private endpoints, or a local test server).
    pub endpoint: Option<Spanned<String>>,
    /// Longest pause between two status polls while waiting (instance running, AMI available...).
    /// A change is noticed about half of it late on average; longer means fewer API calls. Default 3.5s.
    pub poll_interval: Option<Spanned<Duration>>,
    /// Where Windows older than Server 2019 downloads Win32-OpenSSH (a release zip). Default: the
    /// release the user-data script names.
    pub windows_openssh_url: Option<String>,
    /// Instance type of the build machine. Default `t3.micro`.
    pub instance_type: Option<Spanned<String>>,
    /// Subnet id.
    pub subnet_id: Option<Spanned<String>>,
    /// Find the subnet by tags (the one with most free addresses).
    pub subnet_filter: Option<Spanned<BTreeMap<String, String>>>,
    /// VPC id (the temporary security group goes there).
    pub vpc_id: Option<Spanned<String>>,
    /// Use these security groups instead of a temporary one.
    #[serde(default)]
    pub security_group_ids: Vec<Spanned<String>>,
    /// CIDRs allowed to reach SSH on the temporary group. Default: the caller's public IP /32.
    #[serde(default)]
    pub ssh_cidrs: Vec<Spanned<String>>,
    /// Give the machine a public IP.
    pub associate_public_ip: Option<bool>,
    /// Which address SSH uses: `public_ip` (default when there is one), `private_ip`, `public_dns`, `private_dns`.
    pub ssh_interface: Option<Spanned<String>>,
    /// Instance profile name for the build machine.
    pub iam_instance_profile: Option<String>,
    /// Use this existing key pair (with `communicator.private_key_file`) instead of a temporary one.
    pub key_pair_name: Option<Spanned<String>>,
    /// Extra user-data (shell script or cloud-config), appended after imgbake's host-key setup.
    pub user_data: Option<String>,
    /// Extra user-data from a file.
    pub user_data_file: Option<Spanned<String>>,
    /// Require IMDSv2 tokens on the build machine (and the AMI). Default true.
    pub imds_v2: Option<bool>,
    /// Disks of the build machine (and so of the AMI).
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    /// Tags on the build machine and its volumes.
    #[serde(default)]
    pub run_tags: BTreeMap<String, String>,
    /// AMI name template. Default `{{image.name}}-{{timestamp}}`.
    pub ami_name: Option<Spanned<String>>,
    /// Replace an AMI of the same name (in the build region or a copy region): it is deregistered,
    /// with its snapshots, once the new AMI is ready. Without it, such a name fails the preflight.
    pub force_deregister: Option<bool>,
    /// AMI description.
    pub ami_description: Option<String>,
    /// Extra tags on the AMI (the image's `tags` apply too).
    #[serde(default)]
    pub ami_tags: BTreeMap<String, String>,
    /// Extra tags on the AMI's snapshots.
    #[serde(default)]
    pub snapshot_tags: BTreeMap<String, String>,
    /// Copy the AMI to these regions too.
    #[serde(default)]
    pub copy_regions: Vec<Spanned<String>>,
    /// Encrypt the AMI's snapshots.
    pub encrypt: Option<bool>,
    /// KMS key for encryption (default: the account's EBS default key).
    pub kms_key_id: Option<String>,
    /// KMS key per copy region.
    #[serde(default)]
    pub region_kms_key_ids: BTreeMap<String, String>,
    /// Who may launch the AMI.
    pub share: Option<Share>,
    /// Mark the AMI deprecated this long after creation.
    pub deprecate_after: Option<Spanned<Duration>>,
    /// How long to wait for the build machine to run. Default 10m.
    pub instance_timeout: Option<Duration>,
    /// How long to wait for the AMI to become available. Default 60m.
    pub image_timeout: Option<Duration>,
}

impl AwsSettings {
    /// The longest `deprecate_after` EC2 accepts (EnableImageDeprecation: at most 10 years ahead).
    pub const MAX_DEPRECATE_AFTER: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);
}

/// A disk of the build machine.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDevice {
    /// e.g. `/dev/xvda`.
    pub device_name: String,
    /// Size, whole GiB (`20GiB`).
    pub volume_size: Option<Spanned<Size>>,
    /// `gp3` (default), `gp2`, `io2`...
    pub volume_type: Option<String>,
    /// Provisioned IOPS.
    pub iops: Option<i32>,
    /// Throughput MiB/s (gp3).
    pub throughput: Option<i32>,
    /// Encrypt it.
    pub encrypted: Option<bool>,
    /// KMS key.
    pub kms_key_id: Option<String>,
    /// Delete with the instance. Default true.
    pub delete_on_termination: Option<bool>,
}

/// Launch permissions of an AMI.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// Account ids.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Groups (`all` makes it public).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Organization ARNs.
    #[serde(default)]
    pub organizations: Vec<String>,
    /// Organizational unit ARNs.
    #[serde(default)]
    pub organizational_units: Vec<String>,
}

/// Settings of the `qemu` builder (`[images.NAME.qemu]`, defaults in `[defaults.qemu]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSettings {
    /// Where artifacts go (relative to the tree file). Default `output/`.
    pub output_dir: Option<Spanned<String>>,
    /// `auto` (default: KVM when usable, else TCG), `kvm` or `tcg`.
    pub accelerator: Option<Spanned<String>>,
    /// Guest memory. Default 512MiB.
    pub memory: Option<Spanned<Size>>,
    /// Guest CPUs. Default 1.
    pub cpus: Option<u32>,
    /// Grow the disk to this size (the overlay's virtual size).
    pub disk_size: Option<Spanned<Size>>,
    /// Output format: `overlay` (default, qcow2 backed by the parent), `qcow2` (flattened), `raw`,
    /// `vmdk` (VMware), `vdi` (VirtualBox).
    pub format: Option<Spanned<String>>,
    /// Extra QEMU arguments.
    #[serde(default)]
    pub qemu_args: Vec<String>,
    /// The QEMU binary. Default `qemu-system-x86_64`.
    pub binary: Option<String>,
    /// How long a clean (ACPI) shutdown may take before QEMU is stopped hard. Default 2m.
    pub shutdown_timeout: Option<Duration>,
    /// How long the machine may take to boot to SSH. Default 5m.
    pub boot_timeout: Option<Duration>,
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
    /// Images in file order.
    pub images: IndexMap<String, Image>,
}
