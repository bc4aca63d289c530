//! Child processes of the builder: spawned so they cannot outlive imgbake, and found or killed again
//! by pid after a crash (the cleanup journal keeps the pid and the process start time, so a reused pid
//! is never killed by mistake).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::error::QemuError;

/// A command that dies with this process (`PR_SET_PDEATHSIG`), in its own process group (a Ctrl-C at
/// the terminal reaches imgbake, which then shuts the machine down in order), killed when dropped.
pub fn guarded(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.kill_on_drop(true).process_group(0).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd
}

/// A command killed when its handle is dropped, in its own process group, that may outlive imgbake
/// (no parent-death signal): for a machine kept for inspection after a failure.
pub fn killed_on_drop(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.kill_on_drop(true).process_group(0).stdin(Stdio::null());
    cmd
}

/// Run a short command to completion and return its stdout; a failure carries its stderr.
pub async fn output(mut cmd: Command) -> Result<Vec<u8>, QemuError> {
    let line = describe(&cmd);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            QemuError::NotInstalled { program: program.clone() }
        } else {
            QemuError::Command { command: line.clone(), status: format!("could not start: {e}"), stderr: String::new() }
        }
    })?;
    if !out.status.success() {
        return Err(QemuError::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The start time of process `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`), or `None`
/// when it does not exist or is a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // After the state: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    // cutime cstime priority nice num_threads itrealvalue starttime (the 19th after the state).
    fields.nth(18)?.parse().ok()
}

/// The command line of process `pid`, NUL-separated arguments.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// Every live process id.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Send `signal` to `pid` if it is still the process that started at `started`.
pub fn signal_if_same(pid: u32, started: u64, signal: libc::c_int) -> bool {
    if start_time(pid) != Some(started) {
        return false;
    }
    // SAFETY: plain syscall; the pid was checked to be the same process just above.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

/// Remove a file; a missing one is fine.
pub fn remove_file(path: &Path) -> Result<(), QemuError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(QemuError::io("removing", path, e)),
    }
}

/// Remove a directory tree; a missing one is fine.
pub fn remove_dir(path: &Path) -> Result<(), QemuError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(QemuError::io("removing", path, e)),
    }
}
