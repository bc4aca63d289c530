//! Artifact metadata next to the disk (there is no cloud to tag): `NAME.json` beside `NAME.qcow2`.
//! A sidecar is written last, atomically, so a disk without one is a half-made artifact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbake_core::artifact::Artifact;
use serde::{Deserialize, Serialize};

use crate::error::QemuError;

/// The sidecar format version.
pub const VERSION: u32 = 1;

/// What a sidecar holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sidecar {
    /// Format version; its presence also marks the file as an imgbake QEMU sidecar.
    pub imgbake_qemu_artifact: u32,
    /// The tree's name.
    pub tree: String,
    /// The disk's file name, in the sidecar's directory.
    pub disk: String,
    /// `overlay`, `qcow2`, `raw`, `vmdk` or `vdi`.
    pub format: String,
    /// The backing file as written in an overlay (a file name in the same directory, or absolute).
    pub backing: Option<String>,
    /// The image's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The artifact (its path is re-derived from where the sidecar is found).
    pub artifact: Artifact,
}

/// The sidecar path of a disk.
pub fn path_for(disk: &Path) -> PathBuf {
    disk.with_extension("json")
}

/// Write `sidecar` next to its disk in `dir`, atomically (temp file, then rename).
pub fn write(dir: &Path, sidecar: &Sidecar) -> Result<PathBuf, QemuError> {
    let path = path_for(&dir.join(&sidecar.disk));
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(sidecar)
        .map_err(|e| QemuError::Parse { what: "the artifact sidecar".into(), detail: e.to_string() })?;
    std::fs::write(&tmp, text).map_err(|e| QemuError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| QemuError::io("renaming into place", &path, e))?;
    Ok(path)
}

/// Every sidecar in `dir` whose disk exists, with the artifact's path set to where it is now. One
/// directory scan; files that are not imgbake sidecars are skipped.
pub fn scan(dir: &Path) -> Result<Vec<Sidecar>, QemuError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(QemuError::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let Ok(mut s) = serde_json::from_slice::<Sidecar>(&bytes) else { continue };
        let disk = dir.join(&s.disk);
        if !disk.is_file() {
            continue;
        }
        let abs = disk.canonicalize().unwrap_or(disk);
        s.artifact.locations.insert(crate::LOCATION.into(), abs.display().to_string());
        out.push(s);
    }
    out.sort_by_key(|s| s.artifact.created);
    Ok(out)
}
