//! The crate's one error type: every variant says what is wrong and what to do about it.

use std::path::PathBuf;

/// Why a catalog could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog exists but is not Vagrant box metadata that Vagrant itself would accept.
    #[error(
        "{location} is not a valid Vagrant box catalog: {detail} \
         (fix or remove the file; imgbake rewrites only catalogs it can parse)"
    )]
    Malformed { location: String, detail: String },

    /// The catalog belongs to another box than the one being published.
    #[error(
        "{location} is the catalog of box `{found}`, but this build publishes `{expected}`: \
         check `publish.vagrant.name` and `publish.vagrant.catalog` (one catalog per box)"
    )]
    NameMismatch { location: String, found: String, expected: String },

    /// A version string that Vagrant (RubyGems' `Gem::Version`) cannot parse.
    #[error(
        "version `{version}` is not a version Vagrant accepts ({reason}): use dot-separated \
         numbers such as `1.2.3` or `2024.0612.0`"
    )]
    InvalidVersion { version: String, reason: String },

    /// An explicit version that would not become the newest one of the catalog.
    #[error(
        "version `{version}` is not newer than the newest version `{newest}` of the catalog: \
         Vagrant only offers the newest version to `vagrant box update`; pick a higher version \
         (or add a provider to the existing version with `Catalog::add_provider`)"
    )]
    VersionNotNewer { version: String, newest: String },

    /// The version to add a provider to is not in the catalog.
    #[error("version `{version}` is not in the catalog (it has: {known})")]
    UnknownVersion { version: String, known: String },

    /// The version already has a different box for this provider (and architecture).
    #[error(
        "version `{version}` already has a `{provider}` box{arch} with another url or checksum: \
         a published version must not change; publish a new version instead"
    )]
    ProviderExists { version: String, provider: String, arch: String },

    /// A provider entry that Vagrant could not use.
    #[error("invalid provider entry `{provider}`: {reason}")]
    InvalidProvider { provider: String, reason: String },

    /// A release without any provider entry.
    #[error("a release needs at least one provider box (name, url, sha256)")]
    NoProviders,

    /// `keep(0)` would empty the catalog.
    #[error("`keep` must be at least 1 (the version just published must stay in the catalog)")]
    InvalidKeep,

    /// A local file operation failed.
    #[error("{context} ({path}): {source}")]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A catalog store (HTTP, S3, ...) failed; `detail` comes from the backend.
    #[error("{location}: {detail}")]
    Backend {
        location: String,
        detail: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The stored catalog changed between our read and our write (a concurrent publish), and
    /// retrying did not settle it.
    #[error(
        "{location} changed while we updated it, {attempts} times in a row: another publish of \
         the same box is running; retry when it is done"
    )]
    Conflict { location: String, attempts: u32 },
}

impl CatalogError {
    pub(crate) fn io(context: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CatalogError::Io { context: context.into(), path: path.into(), source }
    }

    /// A backend failure with its cause, for [`Backend`](crate::Backend) implementations.
    pub fn backend(
        location: impl Into<String>,
        detail: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        CatalogError::Backend { location: location.into(), detail: detail.into(), source: Some(source.into()) }
    }

    /// A conditional write lost a race, for [`Backend::write`](crate::Backend::write):
    /// [`update`](crate::update) then reads again and retries.
    pub fn conflict(location: impl Into<String>) -> Self {
        CatalogError::Conflict { location: location.into(), attempts: 1 }
    }
}
