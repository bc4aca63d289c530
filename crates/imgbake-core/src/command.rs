//! Building the command line a communicator sends: environment, working directory and the
//! `execute_command` template, for each OS.
//!
//! The template is rendered with handlebars in strict mode. Variables:
//! - `command` — the command to run (for a script step: the uploaded script's path);
//! - `vars` — the request's `env` as assignments, quoted for the OS (`K='v' K2='w'` on Linux,
//!   `$env:K='v'; $env:K2='w';` on Windows). imgbake's steps leave `env` empty and pass their
//!   environment in a file instead ([`env_file`], [`sourcing_env`]), so for them it renders empty;
//! - `workdir` — the working directory, if any;
//! - `encoded` (Windows) — the whole PowerShell script (vars, workdir, command) as a UTF-16LE base64 string
//!   for `powershell -EncodedCommand`.
//!
//! and the helper `quote` (quote a string for the OS shell). Without a template, Linux runs
//! `cd WORKDIR && env VARS sh -c COMMAND` (the parts present) and Windows runs the encoded script with
//! `powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand`.
//!
//! ```
//! use imgbake_config::Os;
//! use imgbake_core::command::compose;
//! use imgbake_core::communicator::ExecRequest;
//!
//! let mut req = ExecRequest::new("echo $GREETING");
//! req.env.push(("GREETING".into(), "it's me".into()));
//! assert_eq!(compose(Os::Linux, &req).unwrap(), r#"env GREETING='it'"'"'s me' sh -c 'echo $GREETING'"#);
//!
//! req.execute_command = Some("sudo -n env {{vars}} sh -c {{quote command}}".into());
//! assert_eq!(compose(Os::Linux, &req).unwrap(), r#"sudo -n env GREETING='it'"'"'s me' sh -c 'echo $GREETING'"#);
//! ```

use base64::Engine;
use handlebars::{Handlebars, handlebars_helper};
use imgbake_config::Os;

use crate::communicator::{CommError, ExecRequest};

/// The default Linux wrapper.
pub const LINUX_DEFAULT: &str =
    "{{#if workdir}}cd {{quote workdir}} && {{/if}}{{#if vars}}env {{vars}} {{/if}}sh -c {{quote command}}";

/// The default Windows wrapper.
pub const WINDOWS_DEFAULT: &str =
    "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {{encoded}}";

/// The command that prints the boot identity on `os`.
pub fn default_boot_identity_command(os: Os) -> &'static str {
    match os {
        Os::Linux => "cat /proc/sys/kernel/random/boot_id",
        // LastBootUpTime changes at every boot and is stable while up; `o` keeps full precision.
        Os::Windows => {
            "powershell.exe -NoProfile -NonInteractive -Command \"(Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')\""
        }
    }
}

/// The command that reboots `os` (through [`compose`], so `execute_command` can add sudo).
pub fn default_reboot_command(os: Os) -> &'static str {
    match os {
        // `shutdown -r now` is polite (services stop cleanly); some minimal systems only have `reboot`.
        Os::Linux => "shutdown -r now 2>/dev/null || reboot",
        Os::Windows => "shutdown.exe /r /f /t 0 /c \"imgbake reboot\"",
    }
}

/// Quote `s` as one word for `os`'s shell.
pub fn quote(os: Os, s: &str) -> String {
    match os {
        Os::Linux => {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
                s.to_string()
            } else {
                format!("'{}'", s.replace('\'', r#"'"'"'"#))
            }
        }
        Os::Windows => format!("'{}'", s.replace('\'', "''")),
    }
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The PowerShell script for a request on Windows: environment, working directory, command, and an exit
/// code that follows the command's.
pub fn powershell_script(req: &ExecRequest) -> String {
    let mut script = String::new();
    for (k, v) in &req.env {
        script.push_str(&format!("$env:{k}={}; ", quote(Os::Windows, v)));
    }
    if let Some(dir) = &req.workdir {
        script.push_str(&format!("Set-Location -LiteralPath {}; ", quote(Os::Windows, dir)));
    }
    script.push_str(&req.command);
    // A native program's exit code is in $LASTEXITCODE; a failed cmdlet leaves $? false.
    script.push_str("\nif ($LASTEXITCODE) { exit $LASTEXITCODE } elseif (-not $?) { exit 1 }");
    script
}

/// `powershell -EncodedCommand` takes base64 of UTF-16LE.
pub fn encode_powershell(script: &str) -> String {
    let bytes: Vec<u8> = script.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn check_env_names(env: &[(String, String)]) -> Result<(), CommError> {
    for (k, _) in env {
        if !env_name_ok(k) {
            return Err(CommError::Command(format!(
                "`{k}` is not a valid environment variable name (letters, digits and _, not starting with a digit)"
            )));
        }
    }
    Ok(())
}

/// The file that carries a step's environment to the machine: values on a command line end up in
/// `ps`, the auth log of `sudo` and so in the image, a file (uploaded 0600, read then deleted by
/// [`sourcing_env`]) does not. Linux: `export K='v'` lines for `sh`; Windows: `$env:K = 'v'` lines
/// for PowerShell (the caller adds the BOM PowerShell needs for UTF-8).
pub fn env_file(os: Os, env: &[(String, String)]) -> Result<String, CommError> {
    check_env_names(env)?;
    let mut s = String::new();
    for (k, v) in env {
        match os {
            Os::Linux => s.push_str(&format!("export {k}={}\n", quote(os, v))),
            Os::Windows => s.push_str(&format!("$env:{k} = {}\r\n", quote(os, v))),
        }
    }
    Ok(s)
}

/// `command`, preceded by reading the environment file at `path` and deleting it, so the file is gone
/// while the command runs. It runs in the same shell as `command` (inside `sh -c` or the encoded
/// PowerShell script), so it works through any `execute_command` that keeps the login user or becomes
/// root (`sudo -n env {{vars}} sh -c {{quote command}}`).
pub fn sourcing_env(os: Os, path: &str, command: &str) -> String {
    let p = quote(os, path);
    match os {
        // `.` of an unreadable file ends a non-interactive sh; `|| exit` keeps that explicit.
        Os::Linux => format!(". {p} && rm -f {p} || exit 125\n{command}"),
        Os::Windows => format!(". {p}; Remove-Item -LiteralPath {p} -Force; {command}"),
    }
}

/// Build the command line for `req` on `os`.
///
/// imgbake's steps never put values in `req.env` here: they pass their environment in a file (see
/// [`env_file`]), so `{{vars}}` renders empty for them. Values given directly in `req.env` (library
/// use) are still rendered into the command line.
pub fn compose(os: Os, req: &ExecRequest) -> Result<String, CommError> {
    check_env_names(&req.env)?;
    // An empty template means "the OS default": it lets one image undo a wrapper set in [defaults].
    let template = req.execute_command.as_deref().filter(|t| !t.trim().is_empty()).unwrap_or(match os {
        Os::Linux => LINUX_DEFAULT,
        Os::Windows => WINDOWS_DEFAULT,
    });
    let vars = match os {
        Os::Linux => req.env.iter().map(|(k, v)| format!("{k}={}", quote(os, v))).collect::<Vec<_>>().join(" "),
        Os::Windows => req.env.iter().map(|(k, v)| format!("$env:{k}={};", quote(os, v))).collect::<Vec<_>>().join(" "),
    };
    let encoded = match os {
        Os::Windows => encode_powershell(&powershell_script(req)),
        Os::Linux => String::new(),
    };
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    match os {
        Os::Linux => {
            handlebars_helper!(q: |s: str| quote(Os::Linux, s));
            hb.register_helper("quote", Box::new(q));
        }
        Os::Windows => {
            handlebars_helper!(q: |s: str| quote(Os::Windows, s));
            hb.register_helper("quote", Box::new(q));
        }
    }
    let data = serde_json::json!({
        "command": req.command,
        "vars": vars,
        "workdir": req.workdir.clone().unwrap_or_default(),
        "encoded": encoded,
    });
    hb.render_template(template, &data)
        .map_err(|e| CommError::Command(format!("execute_command template `{template}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_default_parts() {
        let mut req = ExecRequest::new("make install; echo done");
        assert_eq!(compose(Os::Linux, &req).unwrap(), "sh -c 'make install; echo done'");
        req.workdir = Some("/opt/my app".into());
        req.env = vec![("A".into(), "1".into()), ("B".into(), "x y".into())];
        assert_eq!(
            compose(Os::Linux, &req).unwrap(),
            "cd '/opt/my app' && env A=1 B='x y' sh -c 'make install; echo done'"
        );
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        // The quoted word must come back byte for byte through /bin/sh.
        let nasty = "a'b\"c $HOME `x` \\ \n end";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(Os::Linux, nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }

    #[test]
    fn composed_env_reaches_the_command_in_a_real_shell() {
        let mut req = ExecRequest::new("echo \"$A|$B\"; echo second");
        req.env = vec![("A".into(), "it's".into()), ("B".into(), "$HOME".into())];
        req.workdir = Some("/".into());
        let out = std::process::Command::new("sh").arg("-c").arg(compose(Os::Linux, &req).unwrap()).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "it's|$HOME\nsecond\n");
    }

    #[test]
    fn an_env_file_is_read_and_deleted_before_the_command_runs_in_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.env");
        let env = vec![("A".to_string(), "it's $HOME `x`".to_string()), ("B".to_string(), "two\nlines".to_string())];
        std::fs::write(&path, env_file(Os::Linux, &env).unwrap()).unwrap();
        let p = path.display().to_string();
        let mut req =
            ExecRequest::new(sourcing_env(Os::Linux, &p, &format!("sh -c 'echo \"$A|$B\"'; test -e {p} || echo gone")));
        req.execute_command = Some("env {{vars}} sh -c {{quote command}}".into());
        let cmd = compose(Os::Linux, &req).unwrap();
        assert!(!cmd.contains("it's"), "{cmd}");
        let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "it's $HOME `x`|two\nlines\ngone\n");
        assert!(env_file(Os::Linux, &[("1X".into(), "v".into())]).is_err());
    }

    #[test]
    fn empty_template_means_the_os_default() {
        let mut req = ExecRequest::new("id");
        req.execute_command = Some(" ".into());
        assert_eq!(compose(Os::Linux, &req).unwrap(), "sh -c id");
    }

    #[test]
    fn bad_env_name_and_bad_template_are_errors() {
        let mut req = ExecRequest::new("true");
        req.env = vec![("1BAD".into(), "x".into())];
        assert!(compose(Os::Linux, &req).unwrap_err().to_string().contains("1BAD"));
        let mut req = ExecRequest::new("true");
        req.execute_command = Some("sudo {{ comand }}".into());
        let e = compose(Os::Linux, &req).unwrap_err().to_string();
        assert!(e.contains("comand"), "{e}");
    }

    #[test]
    fn windows_encodes_the_whole_script() {
        let mut req = ExecRequest::new("Write-Output $env:X");
        req.env = vec![("X".into(), "o'k".into())];
        let cmd = compose(Os::Windows, &req).unwrap();
        let b64 = cmd.rsplit(' ').next().unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let units: Vec<u16> = raw.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let script = String::from_utf16(&units).unwrap();
        assert!(script.starts_with("$env:X='o''k'; Write-Output $env:X"), "{script}");
        assert!(cmd.starts_with("powershell.exe -NoProfile"));
    }
}
