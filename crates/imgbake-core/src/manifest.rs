//! The manifest: what a run built or reused, written atomically as JSON for CI and consuming teams.
//!
//! Entries of images a run did not touch (`--only`) are kept from the previous manifest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;

/// The manifest file's format version.
pub const FORMAT: u32 = 1;

/// One run's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// The tree's name.
    pub tree: String,
    /// The run's build id.
    pub build_id: String,
    /// When the run started.
    pub started: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished: Option<DateTime<Utc>>,
    /// image → builder → entry.
    pub images: BTreeMap<String, BTreeMap<String, Entry>>,
}

/// What happened to one image with one builder.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Entry {
    /// `built`, `reused`, `failed`, `skipped`, `cancelled`.
    pub status: String,
    /// The artifact built or reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The fingerprint of its inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The parent image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What it was built from (source or parent artifact id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why it was built, reused or skipped.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The build id of the build that made it (for reused images: the original build).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// When its build started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// How long its build took, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// The steps that ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<serde_json::Value>,
    /// On-box test results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<serde_json::Value>,
    /// What was published (SSM parameters...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
    /// The error, for failed builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `file:line:col` of the configuration value the error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_location: Option<String>,
}

impl Manifest {
    /// Read a manifest; `None` when the file does not exist or is not a manifest we understand.
    pub fn read(path: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Write it atomically: a temporary file in the same directory, fsynced, renamed over the old one.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        tmp.write_all(&text)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}
