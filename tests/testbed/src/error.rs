//! The bed's one error type: every variant says what failed and what to look at or do.

use std::path::PathBuf;
use std::time::Duration;

/// Why a bed component could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum BedError {
    /// A component of the bed is missing on this machine.
    #[error("{what} is missing ({path}): run tests/bed/install.sh")]
    NotInstalled { what: String, path: PathBuf },

    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A server process ended before it became ready.
    #[error("{what} exited before it was ready ({status}); its log:\n{log}")]
    ExitedEarly { what: String, status: String, log: String },

    /// A server or guest did not reach the awaited state in time.
    #[error("{what}: not ready after {after:?}; log tail:\n{log}")]
    Timeout { what: String, after: Duration, log: String },

    /// A helper command (ssh-keygen, build.sh, ...) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },

    /// An HTTP exchange with moto failed or returned an unexpected status.
    #[error("HTTP {method} {url}: {detail}")]
    Http { method: &'static str, url: String, detail: String },

    /// A QMP command to QEMU failed.
    #[error("QMP `{command}` on {socket}: {detail}")]
    Qmp { command: String, socket: PathBuf, detail: String },

    /// The caller asked for something the bed cannot do (bad option, wrong state).
    #[error("{0}")]
    Invalid(String),

    /// An AWS API call to moto failed.
    #[cfg(feature = "aws")]
    #[error("moto {operation} in {region}: {detail}")]
    Aws { operation: &'static str, region: String, detail: String },
}

/// Result with [`BedError`].
pub type Result<T, E = BedError> = std::result::Result<T, E>;

impl BedError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BedError::Io { context: context.into(), source }
    }
}

/// Last `max` bytes of a log, for error messages (cut at a char boundary).
pub(crate) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Reads a log file for an error message; a missing log is reported in its place.
pub(crate) fn read_log_tail(path: &std::path::Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), max),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
