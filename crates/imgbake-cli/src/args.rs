//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Bake machine images: a tree of images, built incrementally, tested on the box, nothing leaked.
#[derive(Parser, Debug)]
#[command(
    name = "imgbake",
    version,
    about = "Bake machine images: a tree of AMIs, VMware templates, Vagrant boxes or QEMU disks, built incrementally, tested on the box, nothing leaked",
    after_help = "Start with `imgbake validate TREE`, then `imgbake plan TREE`; docs: docs/ in the repository.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// More logging (-v info, -vv debug) to stderr; RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a tree file offline (no network call): syntax, keys, types, files, parents, variables.
    ///
    /// Exit code 0: valid; 1: invalid (every problem is listed with file:line:col); 2: usage error.
    Validate(TreeArgs),
    /// Print the tree of images as a graph.
    Graph {
        #[command(flatten)]
        tree: TreeArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Say, for every image, whether it is up to date or must be built — and why. Creates nothing.
    Plan {
        #[command(flatten)]
        tree: TreeArgs,
        #[command(flatten)]
        selection: Selection,
        /// Print the plan as JSON (same as --format json).
        #[arg(long)]
        json: bool,
        /// Output format: `matrix` prints the images to build as CI jobs, parents' levels first
        /// (docs/scheduling.md: one CI job per image).
        #[arg(long, value_enum, default_value_t = PlanFormat::Text, conflicts_with = "json")]
        format: PlanFormat,
    },
    /// Build what the plan says: parents first, independent branches in parallel.
    ///
    /// Exit code 0 when every selected image is built or reused, 1 when anything failed.
    Build {
        #[command(flatten)]
        tree: TreeArgs,
        #[command(flatten)]
        selection: Selection,
        /// How many images build at once (default: settings.parallel, else 4).
        #[arg(long, short = 'j')]
        parallel: Option<usize>,
        /// Only print the plan (same as `imgbake plan`).
        #[arg(long)]
        dry_run: bool,
        /// Write the event stream as NDJSON on stdout (for CI).
        #[arg(long)]
        json: bool,
        /// Prefix plain output lines with the time.
        #[arg(long)]
        timestamps: bool,
        /// What to do when a build fails.
        #[arg(long, value_enum, default_value_t = OnError::Cleanup)]
        on_error: OnError,
        /// Debug mode: pause at breakpoints and before each step; keep the temporary SSH key in a 0600 file.
        #[arg(long)]
        debug: bool,
        /// After building, prune old artifacts (each image's `keep`).
        #[arg(long)]
        prune: bool,
        /// Do not publish what was built (SSM parameters, store uploads, Vagrant catalogs).
        #[arg(long)]
        no_publish: bool,
        /// Write the manifest here instead of settings.manifest.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Hold a lease per image while building it (AWS: an SSM parameter), so CI jobs on other
        /// machines never build the same image at once: they wait, then reuse what was built.
        /// Optional time to live (default 10m), renewed while the build runs.
        #[arg(long, value_name = "TTL", num_args = 0..=1, require_equals = true, default_missing_value = "10m", value_parser = parse_lease_ttl)]
        lease: Option<std::time::Duration>,
        /// Write an HTML report of the run here: one self-contained file with the tree and each
        /// image's status, phase timings, tests and artifacts. Also written when the build fails or
        /// is interrupted; a report that cannot be written makes the exit code 1.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Remove what interrupted builds left behind: from the cleanup journals, then by tag.
    Clean {
        #[command(flatten)]
        tree: TreeArgs,
        /// Only what this build created.
        #[arg(long)]
        build_id: Option<String>,
        /// Only what is older than this (default 6h without --build-id). Builds running on this machine are never touched; keep it above your longest build for builds running elsewhere.
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Turn other tools' templates into a tree file (`imgbake import packer PATH...`).
    #[command(subcommand)]
    Import(ImportFrom),
    /// Delete old artifacts: keep the newest N per image (never the newest, never a kept child's parent).
    Prune {
        #[command(flatten)]
        tree: TreeArgs,
        /// Keep this many per image (default: each image's `keep`; images without it are left alone).
        #[arg(long)]
        keep: Option<u32>,
        /// Only these images.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Point a release channel of an image at an artifact (docs/channels.md): by default the one its
    /// `from` channel points at, when the channel's policies (soak, require_tests) allow it.
    ///
    /// Exit code 0: promoted, rolled back, or already there; 1: refused (one line says why) or failed.
    Promote {
        #[command(flatten)]
        tree: TreeArgs,
        /// The image.
        image: String,
        /// The channel to point (e.g. stable).
        #[arg(long, value_name = "CHANNEL")]
        to: String,
        /// The channel to take the artifact from: must be the one `to` declares (default candidate).
        #[arg(long, value_name = "CHANNEL", conflicts_with = "rollback")]
        from: Option<String>,
        /// Promote this artifact (an AMI id in any of its regions) instead of what `from` points at
        /// now; it must have been in `from`.
        #[arg(long, value_name = "ID", conflicts_with = "rollback")]
        artifact: Option<String>,
        /// Point the channel back at its previous artifact (checks no policy; recorded like a promotion).
        #[arg(long)]
        rollback: bool,
        /// Check the policies and say what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the result (or the refusal) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Where each release channel points (per region, with its age) and who moved it when.
    Channels {
        #[command(flatten)]
        tree: TreeArgs,
        /// Only these images (default: all).
        images: Vec<String>,
        /// How many earlier moves to list per channel.
        #[arg(long, default_value_t = 5, value_name = "N")]
        history: usize,
        /// Print the channels as JSON (every move).
        #[arg(long)]
        json: bool,
    },
    /// List running machines built from images of the tree that are no longer current (docs/audit.md):
    /// their image, how far behind (versions, time), where, and whose (owner tags). Follows the
    /// lineage: a machine of a current app image built from a superseded parent is behind too.
    ///
    /// Exit code 0: no machine is past the deadline (or no deadline is set); 1: a machine runs an
    /// image superseded longer than the deadline ago, or the audit failed.
    Audit {
        #[command(flatten)]
        tree: TreeArgs,
        /// Fail (exit 1) when a machine's image was superseded longer ago than this, e.g. 30d
        /// (default: `[audit] deadline` of the tree; none: report only).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        deadline: Option<std::time::Duration>,
        /// The channel that says what is current (default: `[audit] channel`, else the last channel
        /// of the promotion chain; each image's newest artifact when the tree declares no channels).
        #[arg(long, value_name = "CHANNEL")]
        channel: Option<String>,
        /// A tag key naming a machine's owner (repeatable; default: `[audit] owner_tags`, else
        /// Owner, owner, Team, team, Contact, contact).
        #[arg(long = "owner-tag", value_name = "KEY")]
        owner_tags: Vec<String>,
        /// Print the report as JSON (for dashboards).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportFrom {
    /// Packer templates (JSON, HCL2 files or directories) to one tree file, with a report of every key.
    ///
    /// Exit code 0: written (or, with --check, everything carries over); 1: something has no
    /// equivalent yet (listed with file:line; nothing is written without --allow-unmapped); 2: usage error.
    Packer(PackerImport),
}

#[derive(Args, Debug)]
pub struct PackerImport {
    /// Templates: `*.json`, `*.pkr.hcl`, or directories of `*.pkr.hcl` (one template each). Several make one tree.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A Packer var-file (`*.pkrvars.hcl` or JSON): its values become the variables' defaults (repeatable).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// PARENT=CHILD: the child template is built from the parent's output, when nothing in the files says so (repeatable).
    #[arg(long, value_name = "PARENT=CHILD", value_parser = parse_chain)]
    pub chain: Vec<(PathBuf, PathBuf)>,
    /// Where to write the tree file; paths in it are relative to its directory.
    #[arg(long, short = 'o', default_value = "tree.toml", value_name = "FILE")]
    pub output: PathBuf,
    /// The tree's name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Only print the report; write nothing.
    #[arg(long)]
    pub check: bool,
    /// Write the tree even when some keys have no equivalent (they become TODO comments).
    #[arg(long)]
    pub allow_unmapped: bool,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
}

fn parse_chain(s: &str) -> Result<(PathBuf, PathBuf), String> {
    match s.split_once('=') {
        Some((p, c)) if !p.is_empty() && !c.is_empty() => Ok((PathBuf::from(p), PathBuf::from(c))),
        _ => Err(format!("`{s}` is not PARENT=CHILD (e.g. base.json=app.json)")),
    }
}

/// A lease must outlive a few renewals' round trips (it is renewed every third of it).
fn parse_lease_ttl(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_secs(30) {
        return Err(format!("`{s}` is too short for a lease: use 30s or more (e.g. --lease=10m)"));
    }
    Ok(d)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<imgbake::config::units::Duration>().map(|d| d.get())
}

/// Which images a command works on.
#[derive(Args, Debug, Clone, Default)]
pub struct Selection {
    /// Only these images (comma-separated); their ancestors are reused, and must have artifacts.
    #[arg(long, value_delimiter = ',', value_name = "IMAGES")]
    pub only: Vec<String>,
    /// With --only: also every image below the selected ones.
    #[arg(long, requires = "only")]
    pub downstream: bool,
    /// Build the selected images even when they are up to date.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// Remove the failed build's machine and everything it created.
    Cleanup,
    /// Keep the machine for inspection (prints how to reach it; `imgbake clean` removes it later).
    Abort,
    /// Ask at the failing step: clean up, abort, or retry the step.
    Ask,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table for people.
    Text,
    /// Every decision, as JSON.
    Json,
    /// The images to build as CI matrix entries, grouped by depth (one line of JSON).
    Matrix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT (`imgbake graph tree.toml | dot -Tsvg > tree.svg`).
    Dot,
    /// Mermaid flowchart (renders in GitHub/GitLab Markdown).
    Mermaid,
}

/// The tree file and its variables.
#[derive(Args, Debug, Clone)]
pub struct TreeArgs {
    /// The tree file (e.g. images/tree.toml).
    pub tree: PathBuf,
    /// Set a variable (repeatable): --var region=us-east-1. Beats --var-file and IMGBAKE_VAR_*.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Read variables from a TOML file of `name = value` lines (repeatable; later files win).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}
