//! # imgbake-qemu: local disk images with QEMU
//!
//! The `qemu` builder turns a disk image into a chain of images on the local machine, with no cloud
//! account: each build boots a **qcow2 overlay on its parent** (the child costs only its own changes),
//! reaches SSH through QEMU's user-mode network on a free loopback port, runs the image's steps (the
//! same step runner as every builder; reboot steps may use QMP `system_reset`), shuts the machine down
//! with the ACPI power button, and leaves the artifact in `qemu.output_dir` — as the overlay, flattened
//! (`format = "qcow2"`) or converted (`raw`, `vmdk`, `vdi`) — with a JSON sidecar carrying its
//! fingerprint, so planning is one directory scan.
//!
//! Logging in: the builder generates an SSH key and host key per build and hands them to the guest
//! through QEMU's fw_cfg (`opt/imgbake/authorized_keys`, `opt/imgbake/ssh_host_ed25519_key`). The base
//! image from `scripts/make-base-image.sh` reads them at boot into `/run` (nothing is saved into the
//! image); see docs/builders/qemu.md for other source disks.
//!
//! ```no_run
//! use std::sync::Arc;
//! use imgbake_core::builder::Builder;
//! let builder: Arc<dyn Builder> = Arc::new(imgbake_qemu::QemuBuilder::new());
//! assert_eq!(builder.kind(), "qemu");
//! ```

pub mod accel;
mod build;
mod builder;
pub mod disk;
pub mod error;
pub mod machine;
pub mod process;
pub mod qmp;
pub mod schema;
mod seed;
pub mod session;
pub mod settings;
pub mod sidecar;
pub mod source;
pub mod sweep;

pub use builder::QemuBuilder;
pub use error::QemuError;
pub use schema::{QemuSchema, QemuSettings, QemuSource};
pub use seed::{SEED_AUTHORIZED_KEYS, SEED_HOST_KEY, seed_sanitize_items};
pub use settings::{Accelerator, OutputFormat, Settings};

/// The builder's name in tree files.
pub const KIND: &str = "qemu";

/// The key of an artifact's disk path in [`imgbake_core::artifact::Artifact::locations`].
/// (Core's convention for disk files other builders import.)
pub const LOCATION: &str = imgbake_core::artifact::DISK_LOCATION;
