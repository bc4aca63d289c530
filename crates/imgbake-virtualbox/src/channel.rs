//! Release channels of boxes and OVAs (see `imgbake_core::channel`), for images that publish to a
//! store (`publish = { store = "NAME" }`): one **pointer object** per channel in that store,
//! `TREE/IMAGE/channels/CHANNEL.json` ([`Pointer`]), naming the artifact and its files (key, url,
//! SHA-256, size: a consumer downloads from the channel) with the history of moves, newest first,
//! each with imgbake's [`PointRecord`]. The history keeps the last [`HISTORY_LIMIT`] moves.
//!
//! With `publish.vagrant`, every channel but `candidate` also gets a catalog of its own next to the
//! image's (`team/base/metadata.json` → `team/base/metadata-stable.json`, same box name) listing only
//! the version the channel points at (the main catalog's version of that artifact, found by its box
//! checksums), so `vagrant box add …/metadata-stable.json` sees promoted versions only.
//!
//! Images without a store keep no channels ([`state`] is `None`): a pointer must be somewhere every
//! agent reads.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use imgbake_config::channels::CANDIDATE;
use imgbake_config::{Image, Span, Tree};
use imgbake_core::artifact::{Artifact, tags};
use imgbake_core::channel::{ChannelState, EXTRA_TESTS, PointRecord, Pointing};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_store::Client;
use imgbake_vagrant::{Catalog, Provider, Version};
use serde::{Deserialize, Serialize};

use crate::publish::{self, StoreCatalog};
use crate::published::{Published, PublishedFile};
use crate::schema::{self, VagrantPublish};
use crate::sidecar::{self, Sidecar};

/// The pointer object's format version.
pub const VERSION: u32 = 1;

/// How many moves a pointer object keeps (older ones are dropped: they can no longer be rolled back to).
pub const HISTORY_LIMIT: usize = 50;

/// One move of a channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Move {
    /// When.
    pub at: DateTime<Utc>,
    /// The artifact the channel was pointed at.
    pub artifact: String,
    /// imgbake's record of the move (who, how, from which channel).
    pub record: PointRecord,
    /// The Vagrant version of the artifact in the channel's catalog, if the image has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vagrant_version: Option<String>,
}

/// `TREE/IMAGE/channels/CHANNEL.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pointer {
    /// [`VERSION`].
    pub imgbake_channel: u32,
    /// The tree's name.
    pub tree: String,
    /// The image.
    pub image: String,
    /// The channel.
    pub channel: String,
    /// The artifact it points at.
    pub artifact: String,
    /// That artifact's build.
    pub build_id: String,
    /// That artifact's fingerprint.
    pub fingerprint: String,
    /// That artifact's files by format (`ova`, `box`, `libvirt`), as in the publish record.
    pub files: BTreeMap<String, PublishedFile>,
    /// The channel's Vagrant catalog (a key in the store), when the image has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vagrant_catalog: Option<String>,
    /// Every move, newest first (the first is the current one); at most [`HISTORY_LIMIT`].
    pub history: Vec<Move>,
}

impl Pointer {
    /// The pointer's key for `image`'s `channel`.
    pub fn key(tree: &str, image: &str, channel: &str) -> String {
        format!("{tree}/{image}/channels/{channel}.json")
    }
}

/// The key of the channel's own Vagrant catalog, next to the image's: `metadata.json` → `metadata-stable.json`.
pub fn catalog_key(catalog: &str, channel: &str) -> String {
    let stem = catalog.strip_suffix(".json").unwrap_or(catalog);
    format!("{stem}-{channel}.json")
}

/// The store client of `image`, when it publishes to one.
async fn store_of(tree: &Tree, image: &Image) -> Result<Option<Client>, BuildError> {
    let Some(name) = image.publish.as_ref().and_then(|p| p.store()) else { return Ok(None) };
    let st = tree.store(name.get_ref()).ok_or_else(|| {
        BuildError::new(ErrorKind::Config, format!("unknown store `{}`", name.get_ref())).at(Span::new(name.span()))
    })?;
    publish::client(st, image).await.map(Some)
}

fn location(client: &Client, key: &str) -> String {
    format!("store `{}` object {key}", client.name())
}

async fn read_pointer(client: &Client, image: &Image, key: &str) -> Result<Option<Pointer>, BuildError> {
    let bytes = client.get_bytes(key).await.map_err(|e| {
        BuildError::new(ErrorKind::Platform, format!("image `{}`: reading channel pointer {key}", image.name))
            .caused_by(e)
    })?;
    let Some(bytes) = bytes else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        BuildError::new(
            ErrorKind::Platform,
            format!("{key} in {} is not a channel pointer imgbake wrote: {e}", client.describe()),
        )
    })
}

/// Where `image`'s `channel` points, with its history; `None` when the image publishes to no store.
pub async fn state(tree: &Tree, image: &Image, channel: &str) -> Result<Option<ChannelState>, BuildError> {
    let Some(client) = store_of(tree, image).await? else { return Ok(None) };
    let key = Pointer::key(&tree.name(), &image.name, channel);
    let pointer = read_pointer(&client, image, &key).await?;
    let mut current = BTreeMap::new();
    let mut history = Vec::new();
    if let Some(p) = pointer {
        current.insert(format!("store {}", client.name()), p.artifact.clone());
        history = p
            .history
            .into_iter()
            .map(|m| Pointing {
                artifact: m.artifact,
                at: m.at,
                record: Some(m.record),
                platform_user: None,
                version: m.vagrant_version,
            })
            .collect();
    }
    Ok(Some(ChannelState { channel: channel.to_string(), location: location(&client, &key), current, history }))
}

/// The artifacts `image`'s channels point at or would roll back to (their store files must stay).
pub async fn protected(tree: &Tree, image: &Image) -> Result<BTreeSet<String>, BuildError> {
    let mut out = BTreeSet::new();
    for ch in tree.channels().keys() {
        let Some(s) = state(tree, image, ch).await? else { continue };
        out.extend(s.artifact().map(str::to_string));
        out.extend(s.rollback_target().map(|p| p.artifact.clone()));
    }
    Ok(out)
}

/// The artifact's files in the store (asked of the store: any artifact that was published, not only
/// the newest).
async fn files_in_store(
    client: &Client,
    tree: &Tree,
    image: &Image,
    artifact: &Artifact,
) -> Result<BTreeMap<String, PublishedFile>, BuildError> {
    let mut out = BTreeMap::new();
    for (format, path) in publish::files_of(artifact) {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let key = Published::file_key(&tree.name(), &image.name, &artifact.id, &file);
        let info = client.head(&key).await.map_err(|e| {
            BuildError::new(ErrorKind::Platform, format!("image `{}`: looking up {key}", image.name)).caused_by(e)
        })?;
        let Some(info) = info else {
            return Err(BuildError::new(
                ErrorKind::Config,
                format!(
                    "image `{}`: {} is not in {} (no {key}): only published artifacts can be in a channel",
                    image.name,
                    artifact.id,
                    client.describe()
                ),
            ));
        };
        let sha256 = artifact.extra.get(&format!("sha256.{format}")).cloned().or(info.sha256).unwrap_or_default();
        out.insert(format, PublishedFile { key, sha256, size: info.size, url: info.url });
    }
    if out.is_empty() {
        return Err(BuildError::new(ErrorKind::Local, format!("artifact {} has no files", artifact.id)));
    }
    Ok(out)
}

/// Point `image`'s `channel` at `artifact`: its Vagrant catalog first (channels other than
/// `candidate`), then the pointer object. Nothing for images without a store.
pub async fn point(
    tree: &Tree,
    image: &Image,
    channel: &str,
    artifact: &Artifact,
    record: &PointRecord,
) -> Result<Vec<String>, BuildError> {
    let Some(client) = store_of(tree, image).await? else { return Ok(Vec::new()) };
    let tree_name = tree.name();
    let key = Pointer::key(&tree_name, &image.name, channel);
    let old = read_pointer(&client, image, &key).await?;
    let files = files_in_store(&client, tree, image, artifact).await?;
    let mut written = Vec::new();
    let mut vagrant_version = None;
    let mut vagrant_catalog = None;
    if let Some(vp) = schema::vagrant_of(image)
        && channel != CANDIDATE
    {
        let history = old.as_ref().map(|p| p.history.as_slice()).unwrap_or_default();
        let (ckey, version) = point_catalog(&client, image, vp, channel, artifact, &files, history).await?;
        written.push(format!(
            "channel {channel}: Vagrant box {} {version} in {}",
            vp.name.get_ref(),
            client.url_of(&ckey)
        ));
        vagrant_version = Some(version);
        vagrant_catalog = Some(ckey);
    }
    let mut history = old.map(|p| p.history).unwrap_or_default();
    history.insert(0, Move { at: Utc::now(), artifact: artifact.id.clone(), record: record.clone(), vagrant_version });
    history.truncate(HISTORY_LIMIT);
    let pointer = Pointer {
        imgbake_channel: VERSION,
        tree: tree_name,
        image: image.name.clone(),
        channel: channel.to_string(),
        artifact: artifact.id.clone(),
        build_id: artifact.build_id.clone(),
        fingerprint: artifact.fingerprint.clone(),
        files,
        vagrant_catalog,
        history,
    };
    let json = serde_json::to_vec_pretty(&pointer)
        .map_err(|e| BuildError::new(ErrorKind::Internal, format!("encoding the channel pointer: {e}")))?;
    client.put_bytes(&key, json, "application/json").await.map_err(|e| {
        BuildError::new(ErrorKind::Platform, format!("image `{}`: writing channel pointer {key}", image.name))
            .caused_by(e)
    })?;
    written.insert(0, format!("channel {channel}: {} = {}", location(&client, &key), artifact.id));
    Ok(written)
}

/// Make the channel's catalog list exactly `artifact`'s version: the main catalog's (found by box
/// checksum), else the one the channel's history recorded for it (the main catalog dropped it).
async fn point_catalog(
    client: &Client,
    image: &Image,
    vp: &VagrantPublish,
    channel: &str,
    artifact: &Artifact,
    files: &BTreeMap<String, PublishedFile>,
    history: &[Move],
) -> Result<(String, String), BuildError> {
    let main = StoreCatalog { client, key: vp.catalog.get_ref().clone() };
    let failed = |e: imgbake_vagrant::CatalogError| {
        BuildError::new(ErrorKind::Platform, format!("image `{}`: channel `{channel}`'s Vagrant catalog", image.name))
            .at(Span::new(vp.catalog.span()))
            .caused_by(e)
    };
    use imgbake_vagrant::Backend;
    let listed = match main.read().await.map_err(failed)? {
        Some(b) => {
            let c = Catalog::parse(&b).map_err(failed)?;
            publish::listed(&c, &publish::box_checksums(artifact))
        }
        None => None,
    };
    let version = match listed {
        Some(v) => v,
        None => {
            let number = history
                .iter()
                .find(|m| m.artifact == artifact.id && m.vagrant_version.is_some())
                .and_then(|m| m.vagrant_version.clone())
                .ok_or_else(|| {
                    BuildError::new(
                        ErrorKind::Config,
                        format!(
                            "image `{}`: {} is not in the Vagrant catalog {} (publish it first; `keep` may have dropped it)",
                            image.name,
                            artifact.id,
                            client.url_of(vp.catalog.get_ref())
                        ),
                    )
                    .at(Span::new(vp.catalog.span()))
                })?;
            let mut providers = Vec::new();
            for (format, f) in files {
                let Some(provider) = publish::provider_of(format) else { continue };
                let file = f.key.rsplit('/').next().unwrap_or_default();
                let url = vp.url.as_ref().map(|u| u.get_ref().replace("{file}", file)).unwrap_or_else(|| f.url.clone());
                providers.push(Provider::new(provider, url, f.sha256.clone()));
            }
            Version {
                version: number,
                status: None,
                description_markdown: Some(format!("imgbake build {} of image `{}`", artifact.build_id, image.name)),
                providers,
                extra: Default::default(),
            }
        }
    };
    let ckey = catalog_key(vp.catalog.get_ref(), channel);
    let backend = StoreCatalog { client, key: ckey.clone() };
    let description = vp.description.clone();
    let number = version.version.clone();
    imgbake_vagrant::update(&backend, vp.name.get_ref(), move |c| {
        if c.description.is_none() {
            c.description.clone_from(&description);
        }
        c.versions = vec![version.clone()];
        Ok(())
    })
    .await
    .map_err(failed)?;
    Ok((ckey, number))
}

/// Record the label `key` = `value` in `artifact`'s sidecar (read back into [`Artifact::extra`]:
/// the tests label as `extra["tests"]`, others under their key) and, when the store's publish record
/// names the artifact, in that record's `labels` too.
pub async fn label(tree: &Tree, artifact: &Artifact, key: &str, value: &str) -> Result<(), BuildError> {
    let extra_key = if key == tags::TESTS { EXTRA_TESTS } else { key };
    let files = publish::files_of(artifact);
    let Some(dir) = files.values().next().and_then(|p| p.parent()) else {
        return Err(BuildError::new(ErrorKind::Local, format!("artifact {} has no local files", artifact.id)));
    };
    let path = sidecar::path_for(dir, &artifact.id);
    let bytes = std::fs::read(&path)
        .map_err(|e| BuildError::new(ErrorKind::Local, format!("reading {}: {e}", path.display())))?;
    let mut side: Sidecar = serde_json::from_slice(&bytes).map_err(|e| {
        BuildError::new(ErrorKind::Local, format!("{} is not an artifact sidecar: {e}", path.display()))
    })?;
    side.artifact.extra.insert(extra_key.to_string(), value.to_string());
    sidecar::write(dir, &artifact.id, &side)?;

    let Some(image) = tree.image(&artifact.image) else { return Ok(()) };
    let Some(client) = store_of(tree, image).await? else { return Ok(()) };
    let rkey = Published::key(&tree.name(), &image.name);
    let read = client.get_bytes(&rkey).await.map_err(|e| {
        BuildError::new(ErrorKind::Platform, format!("image `{}`: reading its publish record", image.name)).caused_by(e)
    })?;
    let Some(mut record) = read.and_then(|b| serde_json::from_slice::<Published>(&b).ok()) else { return Ok(()) };
    if record.artifact != artifact.id {
        return Ok(());
    }
    record.labels.insert(extra_key.to_string(), value.to_string());
    publish::write_record(&client, image, &record).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_catalogs_sit_next_to_the_main_one() {
        assert_eq!(catalog_key("team/base/metadata.json", "stable"), "team/base/metadata-stable.json");
        assert_eq!(catalog_key("team/base/catalog", "beta"), "team/base/catalog-beta.json");
        assert_eq!(Pointer::key("boxes", "base", "stable"), "boxes/base/channels/stable.json");
    }
}
