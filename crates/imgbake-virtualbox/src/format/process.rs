//! Running `qemu-img`: killed when dropped, in its own process group, dying with imgbake, with the
//! tail of its stderr in the error.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::error::FormatError;

/// How much of a failed command's stderr goes into the error.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_TAIL_BYTES: usize = 4000;

/// A command that dies with this process, in its own process group, killed when its future is
/// dropped: the qemu crate's.
pub(crate) use imgbake_qemu::process::guarded;

/// Run `cmd` to completion (within `timeout`, when given; the child is killed after it) and return
/// its stdout. A failure carries the last lines of its stderr.
pub(crate) async fn output(mut cmd: Command, timeout: Option<Duration>) -> Result<Vec<u8>, FormatError> {
    let line = describe(&cmd);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = cmd.output();
    let result = match timeout {
        Some(after) => match tokio::time::timeout(after, run).await {
            Ok(r) => r,
            // Dropping the future drops the child, which kill_on_drop kills.
            Err(_) => return Err(FormatError::Timeout { command: line, after }),
        },
        None => run.await,
    };
    let out = result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            FormatError::NotInstalled { program }
        } else {
            FormatError::Command {
                command: line.clone(),
                status: format!("could not start: {e}"),
                stderr: String::new(),
            }
        }
    })?;
    if !out.status.success() {
        return Err(FormatError::Command { command: line, status: out.status.to_string(), stderr: tail(&out.stderr) });
    }
    Ok(out.stdout)
}

/// The last lines of a command's output, trimmed.
pub(crate) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim().lines().collect();
    let mut out = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    if out.len() > STDERR_TAIL_BYTES {
        let mut cut = out.len() - STDERR_TAIL_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("...{}", &out[cut..]);
    }
    out
}

/// The command line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
