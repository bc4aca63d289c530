//! What the configuration-management steps ([`super::chef`], [`super::puppet`], [`super::dsc`]) share:
//! a staging directory on the machine, uploads into it, "install the tool only when it is missing",
//! and removing the staging directory however the step ended.

use std::path::PathBuf;

use imgbake_config::{Os, Spanned};

use super::Ctx;
use super::remote::{Ran, RebootPolicy};
use crate::communicator::ExecRequest;
use crate::error::{BuildError, ErrorKind};

/// A local file or directory and where it goes on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The path as the tree names it (resolved when the step runs).
    pub source: Spanned<String>,
    /// For messages: what it is (`the cookbooks`).
    pub what: String,
    /// The remote path (a directory's contents land in it).
    pub remote: String,
}

/// The tool a step needs, and how to get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    /// Its name, for messages (`Cinc Client`).
    pub name: String,
    /// A command that exits 0 when the tool is there.
    pub probe: String,
    /// The command that installs it.
    pub install: String,
    /// Whether `install` is imgbake's default (the error then says how to replace it).
    pub default_install: bool,
}

/// The file name of a local path (for naming its remote copy).
pub(crate) fn file_name(path: &str) -> String {
    std::path::Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into())
}

/// Upload every item (after checking it can be read), creating the staging directory first.
pub(crate) async fn upload_all(cx: &Ctx<'_>, staging: &str, uploads: &[Upload]) -> Result<(), BuildError> {
    cx.make_remote_dir(staging).await?;
    for u in uploads {
        let local: PathBuf = cx.readable_local(&u.source, &format!("{} ", u.what))?;
        if let Some(parent) = super::remote::remote_parent(&u.remote) {
            cx.make_remote_dir(parent).await?;
        }
        cx.transfer(&format!("uploading {}", u.what), || cx.comm.upload(&local, &u.remote, &cx.events)).await?;
    }
    Ok(())
}

/// Is the tool there? Its probe runs through `execute_command` (a `sudo` wrapper changes `PATH`).
async fn present(cx: &Ctx<'_>, tool: &Tool, execute_command: &Option<String>) -> Result<bool, BuildError> {
    let req = ExecRequest {
        command: tool.probe.clone(),
        execute_command: execute_command.clone(),
        timeout: Some(cx.bounded(std::time::Duration::from_secs(120))),
        ..ExecRequest::default()
    }
    .captured();
    match cx.comm.exec(&req, &cx.events).await {
        Ok(out) => Ok(out.status.success()),
        Err(e) => Err(cx.comm_fail(&format!("looking for {}", tool.name), &e)),
    }
}

/// Install the tool unless it is there already; a failed install is one error saying what ran and
/// how to change it.
pub(crate) async fn ensure_tool(cx: &Ctx<'_>, tool: &Tool, execute_command: &Option<String>) -> Result<(), BuildError> {
    if present(cx, tool, execute_command).await? {
        cx.events.info(format!("{} is installed", tool.name));
        return Ok(());
    }
    cx.events.info(format!("{} is missing; installing it", tool.name));
    let req = ExecRequest {
        command: tool.install.clone(),
        execute_command: execute_command.clone(),
        ..ExecRequest::default()
    };
    let hint = if tool.default_install {
        " (the default install command downloads the vendor's installer, so the machine must reach it; set \
         `install` to install it another way, e.g. from a local mirror)"
    } else {
        ""
    };
    match cx.exec_guarded(&req, RebootPolicy::default(), &[0]).await? {
        Ran::Exited(out) => cx
            .check_exit(&format!("installing {} failed: the install command", tool.name), &out, &[0])
            .map_err(|mut e| {
                e.message.push_str(hint);
                e
            })?,
        Ran::Rebooted | Ran::Rerun => {}
    }
    if !present(cx, tool, execute_command).await? {
        return Err(cx.fail(
            ErrorKind::Step,
            format!("the install command succeeded but {} is still not there (probe: `{}`)", tool.name, tool.probe),
        ));
    }
    Ok(())
}

/// Remove the staging directory (unless kept) and, in any case, the files listed in `always` (secrets).
pub(crate) async fn clean_up(
    cx: &Ctx<'_>,
    staging: &str,
    keep: bool,
    always: &[&str],
    execute_command: &Option<String>,
) {
    if keep {
        for p in always {
            cx.remove_remote(p, execute_command.clone()).await;
        }
        cx.events.info(format!("the staging directory {staging} stays on the machine (keep_staging = true)"));
    } else {
        cx.remove_remote(staging, execute_command.clone()).await;
    }
}

/// The staging directory: the step's, else the default for `os`.
pub(crate) fn staging(os: Os, own: Option<&str>, linux: &str, windows: &str) -> String {
    own.map(str::to_string).unwrap_or_else(|| match os {
        Os::Linux => linux.to_string(),
        Os::Windows => windows.to_string(),
    })
}
