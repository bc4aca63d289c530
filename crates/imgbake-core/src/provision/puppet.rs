//! `puppet_apply`: masterless Puppet with a manifest, modules and Hiera data from the tree (Linux).
//!
//! 1. Puppet is looked for (`puppet` on `PATH`, or Puppet's own `/opt/puppetlabs/bin/puppet`) and
//!    installed only when missing, with `install` (default for Debian/Ubuntu: `apt-get update`, then
//!    `apt-get install -y --no-install-recommends puppet`).
//! 2. The manifest (a file or a directory), the module directories and the Hiera config and data are
//!    uploaded under `staging_dir`; the data directory goes beside the uploaded `hiera.yaml` under its
//!    own name, so the `datadir` that works in the tree (Hiera 5's default is `data`) works there.
//! 3. `puppet apply --detailed-exitcodes` runs with `--modulepath` and `--hiera_config`, through
//!    `execute_command`. Facts are `FACTER_<name>` variables in its environment, which travels in a
//!    0600 file read and deleted before Puppet starts (see [`super::shell::exec_with_env`]), so a fact
//!    holding a secret is never on a command line. Exit codes 0 (no changes) and 2 (changes) are
//!    success; 4 and 6 mean failed resources, 1 a run that did not start (the catalog did not compile).
//! 4. The staging directory is removed (unless `keep_staging = true`), also after a failure.

use imgbake_config::{Os, PuppetApply};

use super::Ctx;
use super::cm::{Tool, Upload, clean_up, ensure_tool, file_name, staging, upload_all};
use super::remote::{Ran, RebootPolicy, remote_join};
use crate::command::quote;
use crate::communicator::{ExecOutput, ExecRequest, ExecStatus};
use crate::error::{BuildError, ErrorKind};

/// Where everything goes when `staging_dir` is not set.
pub const DEFAULT_STAGING: &str = "/tmp/imgbake-puppet";

/// The install command when `install` is not set (Debian and Ubuntu package Puppet as `puppet`). The
/// package lists are refreshed first: a fresh cloud image often has none.
pub const DEFAULT_INSTALL: &str = "export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && \
                                   apt-get install -y --no-install-recommends puppet";

/// Exits 0 when Puppet is installed.
pub const PROBE: &str = "command -v puppet >/dev/null 2>&1 || test -x /opt/puppetlabs/bin/puppet";

/// `--detailed-exitcodes`: no changes, and changes made. Both are success.
pub const VALID_EXIT_CODES: [i32; 2] = [0, 2];

/// Everything a `puppet_apply` step sends, decided before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The staging directory on the machine.
    pub staging: String,
    /// The local files and directories and where they go.
    pub uploads: Vec<Upload>,
    /// Puppet: how to find it and install it.
    pub tool: Tool,
    /// The command that runs `puppet apply`.
    pub run: String,
    /// Its environment (the facts as `FACTER_*`).
    pub env: Vec<(String, String)>,
}

/// Plan a `puppet_apply` step; `manifest_is_dir` says whether the local manifest is a directory.
pub fn plan(p: &PuppetApply, manifest_is_dir: bool) -> Plan {
    let os = Os::Linux;
    let staging = staging(os, p.staging_dir.as_deref(), DEFAULT_STAGING, DEFAULT_STAGING);
    let mut uploads = Vec::new();
    let manifests = remote_join(&staging, "manifests");
    let manifest = if manifest_is_dir { manifests } else { remote_join(&manifests, &file_name(p.manifest.get_ref())) };
    uploads.push(Upload {
        source: p.manifest.clone(),
        what: format!("the manifest ({})", p.manifest.get_ref()),
        remote: manifest.clone(),
    });
    let mut module_path = Vec::new();
    for (n, m) in p.module_paths.iter().enumerate() {
        let remote = remote_join(&staging, &format!("modules-{}", n + 1));
        module_path.push(remote.clone());
        uploads.push(Upload { source: m.clone(), what: format!("the modules ({})", m.get_ref()), remote });
    }
    let hiera = remote_join(&staging, "hiera");
    let hiera_yaml = remote_join(&hiera, "hiera.yaml");
    if let Some(h) = &p.hiera_config {
        uploads.push(Upload {
            source: h.clone(),
            what: format!("the Hiera config ({})", h.get_ref()),
            remote: hiera_yaml.clone(),
        });
    }
    if let Some(d) = &p.hiera_data {
        uploads.push(Upload {
            source: d.clone(),
            what: format!("the Hiera data ({})", d.get_ref()),
            // Under its own name beside hiera.yaml: a `datadir` that works in the tree works there.
            remote: remote_join(&hiera, &file_name(d.get_ref())),
        });
    }
    let mut args = vec!["apply".to_string(), "--detailed-exitcodes".into(), "--color=false".into()];
    if !module_path.is_empty() {
        args.push("--modulepath".into());
        args.push(module_path.join(":"));
    }
    if p.hiera_config.is_some() {
        args.push("--hiera_config".into());
        args.push(hiera_yaml);
    }
    args.extend(p.extra_arguments.iter().cloned());
    args.push(manifest);
    let args: Vec<String> = args.iter().map(|a| quote(os, a)).collect();
    let run = format!(
        "p=$(command -v puppet || echo /opt/puppetlabs/bin/puppet) && cd {} && \"$p\" {}",
        quote(os, &staging),
        args.join(" ")
    );
    let env = p.facts.iter().map(|(k, v)| (format!("FACTER_{k}"), v.clone())).collect();
    let tool = Tool {
        name: "Puppet".into(),
        probe: PROBE.into(),
        install: p.install.clone().unwrap_or_else(|| DEFAULT_INSTALL.into()),
        default_install: p.install.is_none(),
    };
    Plan { staging, uploads, tool, run, env }
}

/// What an exit code of `puppet apply --detailed-exitcodes` means, for the error of a failed run.
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "the run did not start or the catalog did not compile",
        4 => "some resources failed",
        6 => "changes were made and some resources failed",
        _ => "unexpected exit code",
    }
}

pub(crate) async fn run(cx: &Ctx<'_>, p: &PuppetApply) -> Result<(), BuildError> {
    if cx.os() != Os::Linux {
        return Err(cx.fail(ErrorKind::Config, "puppet_apply runs on Linux machines only (for now)"));
    }
    let manifest = cx.readable_local(&p.manifest, "the manifest ")?;
    let plan = plan(p, manifest.is_dir());
    let execute_command = cx.execute_command(p.execute_command.as_ref());
    let result = apply(cx, &plan, &execute_command).await;
    clean_up(cx, &plan.staging, p.keep_staging, &[], &execute_command).await;
    result
}

async fn apply(cx: &Ctx<'_>, plan: &Plan, execute_command: &Option<String>) -> Result<(), BuildError> {
    ensure_tool(cx, &plan.tool, execute_command).await?;
    upload_all(cx, &plan.staging, &plan.uploads).await?;
    let req = ExecRequest {
        command: plan.run.clone(),
        env: plan.env.clone(),
        execute_command: execute_command.clone(),
        ..Default::default()
    };
    let ran = super::shell::exec_with_env(cx, &req, &plan.staging, RebootPolicy::default(), &VALID_EXIT_CODES).await?;
    match ran {
        Ran::Exited(out) => check(cx, &out),
        Ran::Rebooted | Ran::Rerun => Ok(()),
    }
}

fn check(cx: &Ctx<'_>, out: &ExecOutput) -> Result<(), BuildError> {
    match out.status {
        ExecStatus::Exited(0) => {
            cx.events.info("puppet apply: no changes (exit code 0)");
            Ok(())
        }
        ExecStatus::Exited(2) => {
            cx.events.info("puppet apply: changes applied (exit code 2)");
            Ok(())
        }
        ExecStatus::Exited(c) => Err(cx.fail(
            ErrorKind::Step,
            format!("puppet apply exited with code {c}: {}; see its output above", exit_meaning(c)),
        )),
        _ => cx.check_exit("puppet apply", out, &VALID_EXIT_CODES),
    }
}
