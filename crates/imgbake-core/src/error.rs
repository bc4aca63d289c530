//! [`BuildError`]: what every builder, step and the scheduler report when a build fails.

use imgbake_config::Span;

/// What kind of failure, so callers (and the exit code) can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration cannot work (found at build time: an AMI filter matching nothing...).
    Config,
    /// The cloud or hypervisor API refused or failed.
    Platform,
    /// Talking to the machine failed.
    Communicator,
    /// A provisioning step failed.
    Step,
    /// On-box tests failed.
    Test,
    /// Something took too long.
    Timeout,
    /// The user interrupted the build.
    Cancelled,
    /// The user chose to stop after a failure and leave the machine running for inspection
    /// (`--on-error=ask` → abort): nothing is cleaned up.
    Aborted,
    /// Local I/O (journal, manifest, output files).
    Local,
    /// A bug in imgbake or a plugin (a panic): the build is failed and cleaned up.
    Internal,
}

/// A failed build, with the configuration value that caused it when known.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, with ids and regions.
    pub message: String,
    /// The value in the tree file that led here.
    pub span: Option<Span>,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BuildError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BuildError { kind, message: message.into(), span: None, source: None }
    }

    /// Point at the configuration value that caused it.
    pub fn at(mut self, span: impl Into<Option<Span>>) -> Self {
        if self.span.is_none() {
            self.span = span.into();
        }
        self
    }

    /// Keep the underlying error.
    pub fn caused_by(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }

    /// The message with every underlying cause, `: `-separated.
    pub fn chain(&self) -> String {
        let mut s = self.message.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            let t = e.to_string();
            if !s.contains(&t) {
                s.push_str(": ");
                s.push_str(&t);
            }
            cur = e.source();
        }
        s
    }

    /// A cancelled build.
    pub fn cancelled() -> Self {
        BuildError::new(ErrorKind::Cancelled, "interrupted")
    }
}

impl From<crate::communicator::CommError> for BuildError {
    fn from(e: crate::communicator::CommError) -> Self {
        let kind = match &e {
            crate::communicator::CommError::Timeout { .. } | crate::communicator::CommError::ConnectTimeout { .. } => {
                ErrorKind::Timeout
            }
            _ => ErrorKind::Communicator,
        };
        BuildError::new(kind, e.to_string()).caused_by(e)
    }
}
