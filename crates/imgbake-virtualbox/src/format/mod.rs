//! The VirtualBox and Vagrant file formats: OVF descriptors, streamOptimized VMDKs, manifests,
//! OVAs, and Vagrant boxes for the `virtualbox` and `libvirt` providers.
//!
//! Writing: convert the build's disk once with [`StreamDisk::create`], then [`write_ova`] and/or
//! [`write_virtualbox_box`] from it; [`write_libvirt_box`] converts to qcow2 itself. Every archive
//! is written to `OUT.partial` and renamed into place when complete. [`verify_ova`] and
//! [`verify_box`] check the results with `qemu-img`.
//!
//! Reading: [`open`] takes an `.ova`, a `virtualbox` `.box` (tar or tar.gz) or an `.ovf` with its
//! files, verifies the manifest, and returns the descriptor and the disks.
//!
//! The async functions run their blocking parts (tar, hashing) under `spawn_blocking` and
//! `qemu-img` as a child killed when the future is dropped. The sync ones ([`parse_ovf`],
//! [`write_ovf`], [`Manifest`], [`hash_file`], [`open_blocking`]) do their work in place.

mod archive;
mod error;
mod manifest;
mod ova;
mod ovf;
mod package;
mod process;
mod vagrant;
mod verify;
mod vmdk;

pub use error::FormatError;
pub use manifest::{Algorithm, Manifest, ManifestEntry, hash_file};
pub use ova::{package_stem, write_ova};
pub use ovf::{DiskController, DiskInfo, FileRef, Hardware, Ovf, OvfDisk, cim_os_id, parse_ovf, unit_bytes, write_ovf};
pub use package::{Opened, PackageKind, open, open_blocking};
pub use vagrant::{
    BOX_PRIVATE_KEY, VagrantSsh, libvirt_metadata, vagrantfile, write_libvirt_box, write_virtualbox_box,
};
pub use verify::{Verified, VerifiedDisk, verify_box, verify_ova};
pub use vmdk::{
    INSPECT_TIMEOUT, ImageInfo, STREAM_OPTIMIZED_FORMAT, StreamDisk, check, info, populated_size, to_compressed_qcow2,
    to_stream_optimized,
};
