//! # imgbake
//!
//! Bake machine images natively. A tree file describes a tree of images (a patched base OS → a
//! runtime → apps); imgbake builds what changed, tests every image on the box before it is captured,
//! follows reboots by the machine's boot identity, and removes everything it created on every exit path.
//!
//! This crate is the library the `imgbake` command is a thin shell over:
//!
//! ```
//! use imgbake::config::Tree;
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
//! // The builders' schemas (what `[defaults.aws]` and `source.ami_filter` mean) come with the facade.
//! let tree = Tree::load(&dir.path().join("tree.toml"), &imgbake::load_options()).unwrap();
//! let dot = imgbake::config::graph::render(&tree, imgbake::config::graph::GraphFormat::Dot);
//! assert!(dot.contains("\"base\" -> \"web\""));
//! ```

#[cfg(feature = "aws")]
pub use imgbake_aws as aws;
pub use imgbake_config as config;
pub use imgbake_core as core;
#[cfg(feature = "import")]
pub use imgbake_import as import;
#[cfg(feature = "null")]
pub use imgbake_null as null;
#[cfg(feature = "qemu")]
pub use imgbake_qemu as qemu;
pub use imgbake_report as report;
#[cfg(feature = "virtualbox")]
pub use imgbake_virtualbox as virtualbox;
#[cfg(feature = "vsphere")]
pub use imgbake_vsphere as vsphere;

/// The tree-file schemas of the builders this build of imgbake includes (`aws`, `qemu`, `vsphere`, `virtualbox`, `null`, per the
/// crate's features). Pass them to
/// [`config::LoadOptions`] to load trees that use them; [`load_options`] does.
pub fn schemas() -> imgbake_config::Schemas {
    #[allow(unused_mut)]
    let mut s = imgbake_config::Schemas::new();
    #[cfg(feature = "aws")]
    s.add(imgbake_aws::AwsSchema::arc());
    #[cfg(feature = "qemu")]
    s.add(imgbake_qemu::QemuSchema::arc());
    #[cfg(feature = "vsphere")]
    s.add(imgbake_vsphere::VsphereSchema::arc());
    #[cfg(feature = "virtualbox")]
    s.add(imgbake_virtualbox::VirtualboxSchema::arc());
    #[cfg(feature = "null")]
    s.add(imgbake_null::NullSchema::arc());
    s
}

/// Default load options with [`schemas`]: what `Tree::load` needs for trees of this build's builders.
pub fn load_options() -> imgbake_config::LoadOptions {
    imgbake_config::LoadOptions { schemas: schemas(), ..Default::default() }
}

/// The builders this build of imgbake includes (`aws`, `qemu`, `vsphere`, `virtualbox`, `null`, per the crate's features).
pub fn registry() -> imgbake_core::registry::Registry {
    #[allow(unused_mut)]
    let mut r = imgbake_core::registry::Registry::new();
    #[cfg(feature = "aws")]
    r.register(std::sync::Arc::new(imgbake_aws::AwsBuilder::new(imgbake_aws::AwsOptions::default())));
    #[cfg(feature = "qemu")]
    r.register(std::sync::Arc::new(imgbake_qemu::QemuBuilder::new()));
    #[cfg(feature = "vsphere")]
    r.register(std::sync::Arc::new(imgbake_vsphere::VsphereBuilder::default()));
    #[cfg(feature = "virtualbox")]
    r.register(std::sync::Arc::new(imgbake_virtualbox::VirtualboxBuilder::default()));
    #[cfg(feature = "null")]
    r.register(std::sync::Arc::new(imgbake_null::NullBuilder));
    r
}
