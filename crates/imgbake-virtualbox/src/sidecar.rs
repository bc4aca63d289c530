//! The JSON file beside a build's outputs (`IMAGE-BUILD.virtualbox.json`) holding its artifact record and
//! fingerprint: `plan` is one directory scan, and `clean` never removes outputs that have one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbake_core::artifact::Artifact;
use imgbake_core::error::{BuildError, ErrorKind};
use serde::{Deserialize, Serialize};

/// The sidecar's format version.
pub const VERSION: u32 = 1;

/// What the sidecar holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sidecar {
    /// [`VERSION`]; also what tells this builder's sidecars from others'.
    pub imgbake_virtualbox_artifact: u32,
    /// The tree's name.
    pub tree: String,
    /// The image's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The artifact.
    pub artifact: Artifact,
}

/// The sidecar of the build named `stem` in `dir` (named apart from the qemu builder's, which may
/// share the output directory and the build id).
pub fn path_for(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.virtualbox.json"))
}

/// Write it atomically (temp file, rename): a half-written sidecar would hide outputs from `clean`.
pub fn write(dir: &Path, stem: &str, sidecar: &Sidecar) -> Result<PathBuf, BuildError> {
    let path = path_for(dir, stem);
    let tmp = dir.join(format!("{stem}.virtualbox.json.partial"));
    let text = serde_json::to_vec_pretty(sidecar)
        .map_err(|e| BuildError::new(ErrorKind::Internal, format!("encoding the sidecar: {e}")))?;
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| BuildError::new(ErrorKind::Local, format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// Every sidecar of this builder in `dir` (a missing directory has none; others' JSON is skipped).
pub fn scan(dir: &Path) -> Vec<Sidecar> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<Sidecar> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".virtualbox.json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Sidecar>(&b).ok())
        .collect();
    out.sort_by_key(|s| s.artifact.created);
    out
}
