//! [`FormatError`]: what can go wrong reading and writing OVFs, OVAs, VMDKs and Vagrant boxes.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Failures of the format layer; every message names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A program we need is missing.
    #[error("{program} not found: install QEMU's tools (`apt-get install qemu-utils`)")]
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
        /// The last lines it printed on stderr.
        stderr: String,
    },
    /// A command did not finish in time (it was killed).
    #[error("`{command}` did not finish within {}s and was killed", after.as_secs())]
    Timeout {
        /// The command line.
        command: String,
        /// The time it had.
        after: Duration,
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
    /// An OVF descriptor is not one we can read.
    #[error("{}: {detail}", path.display())]
    Ovf {
        /// The descriptor (or the archive holding it).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An OVA, box or OVF directory is not what it should be (a missing file, a bad metadata.json...).
    #[error("{detail}")]
    Package {
        /// The package.
        path: PathBuf,
        /// What is wrong, naming the file.
        detail: String,
    },
    /// A file's digest differs from the manifest's.
    #[error(
        "{file} does not match the manifest {}: {algorithm} is {actual}, the manifest says {expected}",
        manifest.display()
    )]
    ManifestMismatch {
        /// The manifest.
        manifest: PathBuf,
        /// The file, as the manifest names it.
        file: String,
        /// `SHA256`, `SHA1`...
        algorithm: String,
        /// The manifest's digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// A tar entry that would write outside the directory, or is a link or device.
    #[error("{}: refusing entry `{entry}`: {reason}", archive.display())]
    UnsafeEntry {
        /// The archive.
        archive: PathBuf,
        /// The entry's name.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A Vagrant box for another provider.
    #[error(
        "box {} is for provider `{provider}`; the virtualbox builder reads `virtualbox` boxes (.box with box.ovf), .ova and .ovf",
        path.display()
    )]
    WrongProvider {
        /// The box.
        path: PathBuf,
        /// The provider its metadata.json names.
        provider: String,
    },
    /// A written artifact failed a check.
    #[error("{} failed verification: {detail}", path.display())]
    Verify {
        /// The artifact.
        path: PathBuf,
        /// The check that failed.
        detail: String,
    },
    /// A tool printed something we cannot read.
    #[error("cannot read the output of {what}: {detail}")]
    Parse {
        /// Which tool.
        what: String,
        /// Details.
        detail: String,
    },
    /// Bad arguments from the caller (no disks, a name that cannot be a file name...).
    #[error("{0}")]
    Invalid(String),
}

impl FormatError {
    /// An I/O error on `path`.
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io { what: what.into(), path: path.into(), source }
    }

    pub(crate) fn ovf(path: &Path, detail: impl Into<String>) -> Self {
        FormatError::Ovf { path: path.to_path_buf(), detail: detail.into() }
    }

    pub(crate) fn package(path: &Path, detail: impl Into<String>) -> Self {
        FormatError::Package { path: path.to_path_buf(), detail: detail.into() }
    }

    pub(crate) fn verify(path: &Path, detail: impl Into<String>) -> Self {
        FormatError::Verify { path: path.to_path_buf(), detail: detail.into() }
    }
}

/// A blocking task that panicked or was cancelled, as an error.
pub(crate) fn join_error(what: &str, e: tokio::task::JoinError) -> FormatError {
    FormatError::Invalid(format!("{what}: the blocking task failed: {e}"))
}
