//! Disk images through `qemu-img`: streamOptimized VMDKs for OVAs and VirtualBox boxes, compressed
//! qcow2 for libvirt boxes, and the `info`/`check`/`map` the verifiers rely on.
//!
//! Conversions have no time limit of their own (a disk of hundreds of GiB takes what it takes): the
//! child is killed when the future is dropped, so a caller bounds them with `tokio::time::timeout`.
//! The short inspections (`info`, `check`, `map`) are bounded by [`INSPECT_TIMEOUT`].

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{FormatError, join_error};
use super::manifest::{Algorithm, hash_file};
use super::process::{guarded, output};

/// The OVF `ovf:format` of a streamOptimized VMDK.
pub const STREAM_OPTIMIZED_FORMAT: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// The longest a `qemu-img info`, `check` or `map` may take.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(600);

/// What `qemu-img info` says about an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// `qcow2`, `vmdk`, `raw`...
    pub format: String,
    /// The size the guest sees, bytes.
    pub virtual_size: u64,
    /// Bytes the image takes on the host, when qemu-img knows.
    pub actual_size: Option<u64>,
    /// The backing file as written in the image, if any.
    pub backing_filename: Option<String>,
    /// For a VMDK, its subformat (`format-specific.data.create-type`): `streamOptimized`,
    /// `monolithicSparse`...
    pub create_type: Option<String>,
}

#[derive(Deserialize)]
struct RawInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "actual-size")]
    actual_size: Option<u64>,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
    #[serde(rename = "format-specific")]
    format_specific: Option<FormatSpecific>,
}

#[derive(Deserialize)]
struct FormatSpecific {
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MapExtent {
    length: u64,
    data: bool,
}

/// `qemu-img info` of one image (not following its backing chain). `-U`: also while QEMU uses it.
pub async fn info(path: &Path) -> Result<ImageInfo, FormatError> {
    info_of(path.as_os_str(), None).await
}

/// `qemu-img info` of `target` (a path or a `json:` spec), with the format forced when given.
pub(crate) async fn info_of(target: &OsStr, format: Option<&str>) -> Result<ImageInfo, FormatError> {
    let mut cmd = guarded("qemu-img");
    cmd.args(["info", "-U", "--output=json"]);
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    cmd.arg(target);
    let out = output(cmd, Some(INSPECT_TIMEOUT)).await?;
    let raw: RawInfo = serde_json::from_slice(&out).map_err(|e| FormatError::Parse {
        what: format!("qemu-img info {}", target.to_string_lossy()),
        detail: e.to_string(),
    })?;
    let create_type = raw
        .format_specific
        .and_then(|f| f.data)
        .and_then(|d| d.get("create-type").and_then(|c| c.as_str().map(str::to_string)));
    Ok(ImageInfo {
        format: raw.format,
        virtual_size: raw.virtual_size,
        actual_size: raw.actual_size,
        backing_filename: raw.backing_filename,
        create_type,
    })
}

/// `qemu-img check`: `Ok` when the image has no errors (and no leaked clusters), else an error with
/// what qemu-img found. A format without checks (raw) passes.
pub async fn check(path: &Path) -> Result<(), FormatError> {
    check_of(path.as_os_str(), None).await
}

pub(crate) async fn check_of(target: &OsStr, format: Option<&str>) -> Result<(), FormatError> {
    let mut cmd = guarded("qemu-img");
    cmd.args(["check", "-U"]);
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    cmd.arg(target);
    match output(cmd, Some(INSPECT_TIMEOUT)).await {
        Ok(_) => Ok(()),
        // 63: the format does not support checks.
        Err(FormatError::Command { status, .. }) if status.ends_with("exit status: 63") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The bytes of guest data an image holds (its allocated extents, through the backing chain), by
/// `qemu-img map`: the OVF's `ovf:populatedSize`.
pub async fn populated_size(path: &Path) -> Result<u64, FormatError> {
    let mut cmd = guarded("qemu-img");
    cmd.args(["map", "-U", "--output=json"]).arg(path);
    let out = output(cmd, Some(INSPECT_TIMEOUT)).await?;
    let extents: Vec<MapExtent> = serde_json::from_slice(&out)
        .map_err(|e| FormatError::Parse { what: format!("qemu-img map {}", path.display()), detail: e.to_string() })?;
    Ok(extents.iter().filter(|e| e.data).map(|e| e.length).sum())
}

/// Convert `src` (any image qemu-img reads, e.g. a qcow2 overlay with a backing chain, which is
/// flattened) into a streamOptimized VMDK at `dst`. Written to `dst.partial` and renamed into place
/// when complete. No time limit (see the module doc); the child dies with the future.
pub async fn to_stream_optimized(src: &Path, dst: &Path) -> Result<(), FormatError> {
    convert(src, dst, &["-O", "vmdk", "-o", "subformat=streamOptimized"]).await
}

/// Convert (and flatten) `src` into a standalone compressed qcow2 at `dst` (for libvirt boxes).
/// `dst.partial` then rename, like [`to_stream_optimized`].
pub async fn to_compressed_qcow2(src: &Path, dst: &Path) -> Result<(), FormatError> {
    convert(src, dst, &["-O", "qcow2", "-c"]).await
}

async fn convert(src: &Path, dst: &Path, how: &[&str]) -> Result<(), FormatError> {
    // Name the source format: no probing (a raw image could claim to be anything).
    let src_info = info(src).await?;
    let partial = partial_path(dst);
    remove_quietly(&partial);
    let mut cmd = guarded("qemu-img");
    cmd.args(["convert", "-f", &src_info.format]).args(how).arg(src).arg(&partial);
    match output(cmd, None).await {
        Ok(_) => std::fs::rename(&partial, dst).map_err(|e| {
            remove_quietly(&partial);
            FormatError::io("renaming into place", dst, e)
        }),
        Err(e) => {
            remove_quietly(&partial);
            Err(e)
        }
    }
}

/// `PATH.partial`: where an output is written before it is complete.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

pub(crate) fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// A streamOptimized VMDK ready to go into an OVA or a box, with what the OVF and manifest say of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamDisk {
    /// The VMDK.
    pub path: PathBuf,
    /// Its virtual size, bytes (the OVF's `ovf:capacity`).
    pub capacity: u64,
    /// The file's size, bytes (the OVF's `File ovf:size`).
    pub file_size: u64,
    /// Bytes of guest data (the OVF's `ovf:populatedSize`).
    pub populated_size: u64,
    /// SHA-256 of the file, lowercase hex (the manifest's line).
    pub sha256: String,
}

impl StreamDisk {
    /// Convert `src` into a streamOptimized VMDK at `dst` and describe it. Convert once, then hand
    /// the same `StreamDisk` to [`super::write_ova`] and [`super::write_virtualbox_box`].
    pub async fn create(src: &Path, dst: &Path) -> Result<StreamDisk, FormatError> {
        to_stream_optimized(src, dst).await?;
        StreamDisk::describe(dst).await
    }

    /// Describe an existing VMDK, which must be streamOptimized (the only subformat an OVA holds).
    pub async fn describe(vmdk: &Path) -> Result<StreamDisk, FormatError> {
        let info = info(vmdk).await?;
        if info.format != "vmdk" || info.create_type.as_deref() != Some("streamOptimized") {
            return Err(FormatError::Invalid(format!(
                "{} is {} ({}), not a streamOptimized VMDK: convert it with to_stream_optimized",
                vmdk.display(),
                info.format,
                info.create_type.as_deref().unwrap_or("no subformat")
            )));
        }
        let populated_size = populated_size(vmdk).await?;
        let path = vmdk.to_path_buf();
        let (sha256, file_size) = tokio::task::spawn_blocking(move || {
            let size = std::fs::metadata(&path).map_err(|e| FormatError::io("reading", &path, e))?.len();
            Ok::<_, FormatError>((hash_file(&path, Algorithm::Sha256)?, size))
        })
        .await
        .map_err(|e| join_error("hashing the disk", e))??;
        Ok(StreamDisk { path: vmdk.to_path_buf(), capacity: info.virtual_size, file_size, populated_size, sha256 })
    }
}
