//! [`QemuError`]: what can go wrong talking to QEMU, qemu-img and the local disk.

use std::path::PathBuf;

use imgbake_core::error::{BuildError, ErrorKind};

/// Failures of the QEMU builder's parts, before they become a [`BuildError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuError {
    /// A QEMU program is missing.
    #[error(
        "{program} not found: install QEMU with scripts/base-image/install-tools.sh (or `apt-get install qemu-system-x86 qemu-utils`)"
    )]
    NotInstalled {
        /// The program.
        program: String,
    },
    /// A command failed.
    #[error("`{command}` {status}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// Local file I/O failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: String,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A QMP exchange failed.
    #[error("QMP `{command}` on {}: {detail}", socket.display())]
    Qmp {
        /// The QMP command.
        command: String,
        /// The monitor socket.
        socket: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A tool printed something we cannot read.
    #[error("cannot read the output of {what}: {detail}")]
    Parse {
        /// Which tool or file.
        what: String,
        /// Details.
        detail: String,
    },
}

impl QemuError {
    /// An I/O error on `path`.
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        QemuError::Io { what: what.into(), path: path.into(), source }
    }

    /// The error as a [`BuildError`] of `kind`, prefixed with `context`.
    pub fn build(self, kind: ErrorKind, context: impl Into<String>) -> BuildError {
        let context = context.into();
        BuildError::new(kind, format!("{context}: {self}")).caused_by(self)
    }
}

impl From<QemuError> for BuildError {
    fn from(e: QemuError) -> Self {
        let kind = match &e {
            QemuError::Io { .. } => ErrorKind::Local,
            QemuError::NotInstalled { .. } => ErrorKind::Config,
            _ => ErrorKind::Platform,
        };
        BuildError::new(kind, e.to_string()).caused_by(e)
    }
}
