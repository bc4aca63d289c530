//! Disk images through `qemu-img`: inspect, create overlays, convert.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::QemuError;
use crate::process::{guarded, output};

/// What `qemu-img info` says about a disk.
#[derive(Clone, Debug, Deserialize)]
pub struct DiskInfo {
    /// `qcow2`, `raw`, `vmdk`...
    pub format: String,
    /// Size seen by the guest, bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// The backing file as written in the image (relative paths are relative to the image).
    #[serde(rename = "backing-filename")]
    pub backing_filename: Option<String>,
    /// The backing file resolved.
    #[serde(rename = "full-backing-filename")]
    pub full_backing_filename: Option<String>,
    /// The backing file's format.
    #[serde(rename = "backing-filename-format")]
    pub backing_format: Option<String>,
}

/// `qemu-img info` of one disk (not following the backing chain). `-U`: also while QEMU uses it.
pub async fn info(path: &Path) -> Result<DiskInfo, QemuError> {
    let mut cmd = guarded("qemu-img");
    cmd.args(["info", "-U", "--output=json"]).arg(path);
    let out = output(cmd).await?;
    serde_json::from_slice(&out)
        .map_err(|e| QemuError::Parse { what: format!("qemu-img info {}", path.display()), detail: e.to_string() })
}

/// Create a qcow2 overlay at `path` backed by `backing` (written into the overlay as given, so a
/// relative name keeps a directory of chained artifacts movable), optionally with a larger size.
pub async fn create_overlay(
    path: &Path,
    backing: &str,
    backing_format: &str,
    size: Option<u64>,
) -> Result<(), QemuError> {
    let mut cmd = guarded("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing]).arg(path);
    if let Some(size) = size {
        cmd.arg(size.to_string());
    }
    // qemu-img resolves a relative backing name against the overlay's directory.
    cmd.current_dir(path.parent().unwrap_or(Path::new(".")));
    output(cmd).await.map(drop)
}

/// Convert (and so flatten) the whole chain of `src` into a standalone `dst` of `format`.
pub async fn convert(src: &Path, dst: &Path, format: &str) -> Result<(), QemuError> {
    let mut cmd = guarded("qemu-img");
    cmd.args(["convert", "-f", "qcow2", "-O", format]);
    if format == "vmdk" {
        // One growable file; what VMware Workstation/ESXi import expect.
        cmd.args(["-o", "subformat=monolithicSparse"]);
    }
    cmd.arg(src).arg(dst);
    output(cmd).await.map(drop)
}

/// The path to write into an overlay for its backing file: the bare file name when both are in the
/// same directory (the chain stays movable), else the absolute path.
pub fn backing_reference(overlay: &Path, backing: &Path) -> String {
    match (overlay.parent(), backing.parent(), backing.file_name()) {
        (Some(a), Some(b), Some(name)) if a == b => name.to_string_lossy().into_owned(),
        _ => backing.display().to_string(),
    }
}

/// `path` made absolute and with symlinks resolved (a symlink to a content-addressed cache entry
/// resolves to that entry, so an overlay never follows a link that is later re-pointed).
pub fn canonical(path: &Path) -> Result<PathBuf, QemuError> {
    path.canonicalize().map_err(|e| QemuError::io("resolving", path, e))
}
