//! # imgbake
//!
//! Bake machine images natively. A tree file describes a tree of images (a patched base OS → a
//! runtime → apps); imgbake builds what changed, tests every image on the box before it is captured,
//! follows reboots by the machine's boot identity, and removes everything it created on every exit path.
//!
//! This crate is the library the `imgbake` command is a thin shell over:
//!
//! ```
//! use imgbake::config::{LoadOptions, Tree};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("tree.toml"), r#"
//! [settings]
//! id = "example-tree-0001"
//!
//! [defaults]
//! builder = "aws"
//! communicator = { username = "admin" }
//! aws = { region = "eu-west-1" }
//!
//! [images.base]
//! source = { ami_filter = { name = "debian-12-amd64-*", owners = ["136693071363"], most_recent = true } }
//!
//! [images.web]
//! parent = "base"
//! "#).unwrap();
//!
//! let tree = Tree::load(&dir.path().join("tree.toml"), &LoadOptions::default()).unwrap();
//! let dot = imgbake::config::graph::render(&tree, imgbake::config::graph::GraphFormat::Dot);
//! assert!(dot.contains("\"base\" -> \"web\""));
//! ```

#[cfg(feature = "aws")]
pub use imgbake_aws as aws;
pub use imgbake_config as config;
pub use imgbake_core as core;
#[cfg(feature = "qemu")]
pub use imgbake_qemu as qemu;

/// The builders this build of imgbake includes (`aws`, `qemu`, per the crate's features).
pub fn registry() -> imgbake_core::registry::Registry {
    #[allow(unused_mut)]
    let mut r = imgbake_core::registry::Registry::new();
    #[cfg(feature = "aws")]
    r.register(std::sync::Arc::new(imgbake_aws::AwsBuilder::new(imgbake_aws::AwsOptions::default())));
    #[cfg(feature = "qemu")]
    r.register(std::sync::Arc::new(imgbake_qemu::QemuBuilder::new()));
    r
}
