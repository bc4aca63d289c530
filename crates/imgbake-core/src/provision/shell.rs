//! `shell`: run commands or scripts on the machine.
//!
//! `inline` lines become one script (with `shebang`, default `#!/bin/sh -e`, so the first failing
//! command stops it); `script` / `scripts` are read from the imgbake host. Each script is uploaded to
//! `remote_dir` (default `/tmp`) as an executable file, run through the `execute_command` template (the
//! step's, else the image's `communicator.execute_command`, else `sh -c`) with `env`, and removed
//! afterwards. Exit codes outside `valid_exit_codes` (default `[0]`) fail the step. Reboots during a
//! script follow `expect_reboot` / `on_reboot` (see [`super::remote`]).
//!
//! On Windows a `shell` step runs its commands as PowerShell (see [`super::powershell`]).

use imgbake_config::{Os, Shell, Spanned};

use super::remote::{Ran, RebootPolicy, remote_join};
use super::{Ctx, Done};
use crate::command::{env_file, sourcing_env};
use crate::communicator::ExecRequest;
use crate::error::{BuildError, ErrorKind};

/// The interpreter line of `inline` scripts when none is given: `-e` stops at the first failure.
pub const DEFAULT_SHEBANG: &str = "#!/bin/sh -e";

/// Where scripts go on Linux when `remote_dir` is not set.
pub const DEFAULT_REMOTE_DIR: &str = "/tmp";

/// A script to upload and run.
#[derive(Clone, Debug)]
pub(crate) struct Script {
    /// For messages: `inline commands` or the local path.
    pub what: String,
    /// Its bytes.
    pub content: Vec<u8>,
}

/// The script made of `inline` lines.
pub fn inline_script(shebang: Option<&str>, lines: &[String]) -> String {
    let mut s = String::from(shebang.unwrap_or(DEFAULT_SHEBANG).trim_end());
    s.push('\n');
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Read `script` and `scripts` (in that order) from the imgbake host.
pub(crate) fn read_scripts(
    cx: &Ctx<'_>,
    script: Option<&Spanned<String>>,
    scripts: &[Spanned<String>],
) -> Result<Vec<Script>, BuildError> {
    script
        .into_iter()
        .chain(scripts)
        .map(|s| {
            let path = cx.tree().path(s);
            match std::fs::read(&path) {
                Ok(content) => Ok(Script { what: path.display().to_string(), content }),
                Err(e) => Err(cx
                    .fail(
                        ErrorKind::Local,
                        format!(
                            "cannot read the script {} (named at {}): {e}",
                            path.display(),
                            cx.tree().locate(imgbake_config::Span::new(s.span()))
                        ),
                    )
                    .at(imgbake_config::Span::new(s.span()))),
            }
        })
        .collect()
}

pub(crate) async fn run(cx: &Ctx<'_>, sh: &Shell) -> Result<Done, BuildError> {
    let policy = RebootPolicy { expect_reboot: sh.expect_reboot, on_reboot: sh.on_reboot.unwrap_or_default() };
    let valid = sh.valid_exit_codes.clone().unwrap_or_else(|| vec![0]);
    let env: Vec<(String, String)> = sh.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let execute_command = cx.execute_command(sh.execute_command.as_ref());
    if cx.os() == Os::Windows {
        let scripts = if sh.inline.is_empty() {
            read_scripts(cx, sh.script.as_ref(), &sh.scripts)?
        } else {
            vec![Script { what: "inline commands".into(), content: sh.inline.join("\n").into_bytes() }]
        };
        let run = super::powershell::Run {
            scripts,
            env,
            execute_command,
            valid,
            policy,
            remote_dir: sh.remote_dir.clone(),
            elevated: false,
        };
        return super::powershell::run_scripts(cx, &run).await;
    }
    let scripts = if sh.inline.is_empty() {
        read_scripts(cx, sh.script.as_ref(), &sh.scripts)?
    } else {
        vec![Script {
            what: "inline commands".into(),
            content: inline_script(sh.shebang.as_deref(), &sh.inline).into_bytes(),
        }]
    };
    let dir = sh.remote_dir.as_deref().unwrap_or(DEFAULT_REMOTE_DIR);
    for (n, script) in scripts.iter().enumerate() {
        let remote = remote_join(dir, &cx.remote_name(&format!("script{}", n + 1), "sh"));
        cx.transfer("uploading the script", || cx.comm.upload_bytes(&script.content, &remote, 0o700)).await?;
        let req = ExecRequest {
            command: remote.clone(),
            env: env.clone(),
            execute_command: execute_command.clone(),
            ..ExecRequest::default()
        };
        let ran = exec_with_env(cx, &req, dir, policy, &valid).await;
        cx.remove_remote(&remote, None).await;
        match ran? {
            Ran::Exited(out) => cx.check_exit(&format!("the script ({})", script.what), &out, &valid)?,
            // The script rebooted the machine, as it was meant to (or on_reboot = "continue").
            Ran::Rebooted => {}
            Ran::Rerun => return Ok(Done::Rerun),
        }
    }
    Ok(Done::Ok)
}

/// Run `req` like [`Ctx::exec_guarded`], with its environment passed in a file instead of on the command
/// line: uploaded 0600 to a unique name in `dir`, read and deleted by the command before it starts (see
/// [`crate::command::sourcing_env`]), and removed afterwards in case the command never ran.
pub(crate) async fn exec_with_env(
    cx: &Ctx<'_>,
    req: &ExecRequest,
    dir: &str,
    policy: RebootPolicy,
    valid: &[i32],
) -> Result<Ran, BuildError> {
    if req.env.is_empty() {
        return cx.exec_guarded(req, policy, valid).await;
    }
    let os = cx.os();
    let mut content = env_file(os, &req.env).map_err(|e| cx.fail(ErrorKind::Config, e.to_string()))?.into_bytes();
    let ext = match os {
        Os::Linux => "env",
        Os::Windows => {
            content = super::powershell::script_file(&content);
            "ps1"
        }
    };
    let path = remote_join(dir, &cx.remote_name("env", ext));
    cx.transfer("uploading the step's environment", || cx.comm.upload_bytes(&content, &path, 0o600)).await?;
    let staged = ExecRequest { command: sourcing_env(os, &path, &req.command), env: Vec::new(), ..req.clone() };
    let ran = cx.exec_guarded(&staged, policy, valid).await;
    cx.remove_remote(&path, None).await;
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_gets_the_shebang() {
        assert_eq!(inline_script(None, &["a".into(), "b c".into()]), "#!/bin/sh -e\na\nb c\n");
        assert_eq!(inline_script(Some("#!/bin/bash -eux\n"), &["x".into()]), "#!/bin/bash -eux\nx\n");
    }
}
