//! imgbake's Vagrant box catalogs: the `metadata.json` that `vagrant box add URL` reads.
//!
//! A catalog names one box (`team/base`) and lists its versions; each version has one box file
//! per provider (`virtualbox`, `libvirt`, …) with a download url and a SHA-256 that Vagrant
//! checks. After a build, imgbake adds a version to the catalog, optionally drops all but the
//! newest N, and writes the catalog back atomically; developers then see the new version with
//! `vagrant box outdated` and fetch it with `vagrant box update`. See `docs/vagrant.md`.
//!
//! - [`Catalog`], [`Version`], [`Provider`]: the format, as Vagrant 2.3.4 reads it; unknown
//!   fields of an existing catalog survive a rewrite.
//! - [`Release`] + [`VersionScheme`]: what a build adds — date (`2024.0612.0`, default),
//!   semver patch bump, or an exact version — always newer than what is there, compared the
//!   way Vagrant compares ([`GemVersion`], RubyGems' `Gem::Version`).
//! - [`update_local`]: locked, atomic read-modify-write of a catalog file;
//!   [`update`] + [`Backend`]: the same over any store.
//! - [`box_checksum`]: the streamed SHA-256 of a box file.
//!
//! This crate does no network I/O of its own.
//!
//! ```
//! use imgbake_vagrant::{Catalog, Provider, Release, VersionScheme, update_local};
//!
//! # fn main() -> Result<(), imgbake_vagrant::CatalogError> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let catalog = dir.path().join("team/base/metadata.json");
//! let sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
//!
//! // Two builds publish; the second also keeps only the newest version.
//! let first = update_local(&catalog, "team/base", |c| {
//!     c.add(Release::new(VersionScheme::Semver)
//!         .provider(Provider::new("virtualbox", "https://boxes.example/base/1.0.0/virtualbox.box", sha256))
//!         .provider(Provider::new("libvirt", "https://boxes.example/base/1.0.0/libvirt.box", sha256)))
//! })?;
//! assert_eq!(first.version, "1.0.0");
//!
//! let removed = update_local(&catalog, "team/base", |c| {
//!     c.add(Release::new(VersionScheme::Semver)
//!         .provider(Provider::new("virtualbox", "https://boxes.example/base/1.0.1/virtualbox.box", sha256)))?;
//!     c.keep(1)
//! })?;
//! assert_eq!(removed[0].version, "1.0.0"); // delete its box files now
//!
//! let json = std::fs::read(&catalog).expect("catalog written");
//! let c = Catalog::parse(&json)?;
//! assert_eq!(c.name, "team/base");
//! assert_eq!(c.newest().map(|v| v.version.as_str()), Some("1.0.1"));
//! assert_eq!(c.versions[0].providers[0].checksum_type.as_deref(), Some("sha256"));
//! # Ok(()) }
//! ```

mod catalog;
mod checksum;
mod error;
mod store;
mod version;

pub use catalog::{Catalog, Provider, Release, Version};
pub use checksum::box_checksum;
pub use error::CatalogError;
pub use store::{Backend, CONFLICT_RETRIES, lock_path, read_local, update, update_local, write_atomic};
pub use version::{GemVersion, VersionScheme};
