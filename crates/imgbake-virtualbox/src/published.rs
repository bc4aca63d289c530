//! What an image published to a store: `TREE/IMAGE/latest.json`, written last (after every file of the
//! artifact is uploaded and its boxes are in the Vagrant catalog: a reader never sees a record whose files are missing), naming each
//! file's key and SHA-256. A child built on another agent starts from it
//! (`source = { store = "NAME", image = "base" }`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use imgbake_config::Tree;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_store::Client;
use serde::{Deserialize, Serialize};

/// The record's format version.
pub const VERSION: u32 = 1;

/// One published file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishedFile {
    /// Its key in the store.
    pub key: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where a consumer downloads it.
    pub url: String,
}

/// An image's newest published artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Published {
    /// [`VERSION`].
    pub imgbake_published: u32,
    /// The tree's name.
    pub tree: String,
    /// The image.
    pub image: String,
    /// The artifact's id.
    pub artifact: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The build that made it.
    pub build_id: String,
    /// When it was published.
    pub published: DateTime<Utc>,
    /// Its files by format (`ova`, `box`, `libvirt`).
    pub files: BTreeMap<String, PublishedFile>,
    /// Labels of the artifact (`tests`: its on-box tests' result, see `imgbake_core::channel`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Published {
    /// The record's key for `image` of `tree`.
    pub fn key(tree: &str, image: &str) -> String {
        format!("{tree}/{image}/latest.json")
    }

    /// Where the artifact's `file` goes.
    pub fn file_key(tree: &str, image: &str, artifact: &str, file: &str) -> String {
        format!("{tree}/{image}/{artifact}/{file}")
    }

    /// Read the record of `image` (of `tree`'s name) from the store.
    pub async fn read(client: &Client, tree: &Tree, image: &str) -> Result<Published, BuildError> {
        let key = Self::key(&tree.name(), image);
        let bytes = client.get_bytes(&key).await.map_err(|e| {
            BuildError::new(ErrorKind::Platform, format!("reading what image `{image}` published")).caused_by(e)
        })?;
        let Some(bytes) = bytes else {
            return Err(BuildError::new(
                ErrorKind::Config,
                format!(
                    "image `{image}` has not been published to {} yet (no {key}): build it with publish.store first",
                    client.describe()
                ),
            ));
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            BuildError::new(
                ErrorKind::Platform,
                format!("{key} in {} is not a record imgbake wrote: {e}", client.describe()),
            )
        })
    }

    /// The file a child opens: the OVA, else the VirtualBox box.
    pub fn openable(&self) -> Option<(&str, &PublishedFile)> {
        ["ova", "box"].into_iter().find_map(|f| self.files.get(f).map(|e| (f, e)))
    }
}
