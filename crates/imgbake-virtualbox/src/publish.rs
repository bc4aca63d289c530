//! After a build: the artifact's files go to the image's store (`publish.store`), then the record
//! of what was published; the boxes are added to the Vagrant catalog (`publish.vagrant`) as a new
//! version, keeping the newest N.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use imgbake_config::{Image, Span, Store, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::EventSink;
use imgbake_store::Client;
use imgbake_vagrant::{Backend, CatalogError, Provider, Release, VersionScheme};

use crate::published::{Published, PublishedFile};
use crate::schema::{self, VagrantPublish};
use crate::source::Events;

/// A client of `store`, for `image`'s messages.
pub async fn client(store: &Store, image: &Image) -> Result<Client, BuildError> {
    Client::open(store).await.map_err(|e| {
        // The cause names the store.
        BuildError::new(ErrorKind::Config, format!("image `{}`", image.name)).at(store.span).caused_by(e)
    })
}

/// Before the build: the store's credentials are there and it answers for this image's record (a
/// HEAD: refused credentials and an unreachable server show now, not after the build).
pub async fn check(tree: &Tree, image: &Image) -> Result<(), BuildError> {
    let Some(name) = image.publish.as_ref().and_then(|p| p.store()) else { return Ok(()) };
    let Some(st) = tree.store(name.get_ref()) else { return Ok(()) };
    let client = client(st, image).await?;
    client.head(&Published::key(&tree.name(), &image.name)).await.map(|_| ()).map_err(|e| {
        BuildError::new(
            ErrorKind::Config,
            format!("image `{}` publishes to store `{}`, which cannot be used", image.name, st.name),
        )
        .at(Span::new(name.span()))
        .caused_by(e)
    })
}

/// The Vagrant provider of a format.
pub(crate) fn provider_of(format: &str) -> Option<&'static str> {
    match format {
        "box" => Some("virtualbox"),
        "libvirt" => Some("libvirt"),
        _ => None,
    }
}

/// The artifact's files by format.
pub fn files_of(artifact: &Artifact) -> BTreeMap<String, PathBuf> {
    schema::FORMATS
        .iter()
        .filter_map(|f| artifact.locations.get(*f).map(|p| (f.to_string(), PathBuf::from(p))))
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Publish `artifact` of `image`; what was published, for people.
pub async fn publish(
    tree: &Tree,
    image: &Image,
    artifact: &Artifact,
    events: &EventSink,
) -> Result<Vec<String>, BuildError> {
    let mut written = Vec::new();
    let files = files_of(artifact);
    let store = match image.publish.as_ref().and_then(|p| p.store()) {
        Some(name) => {
            let st = tree.store(name.get_ref()).ok_or_else(|| {
                BuildError::new(ErrorKind::Config, format!("unknown store `{}`", name.get_ref()))
                    .at(Span::new(name.span()))
            })?;
            Some(client(st, image).await?)
        }
        None => None,
    };
    // Files first, then the catalog, then the store's record: the record is written last, so a
    // publish that failed half-way leaves no record naming this artifact, and the next run (which
    // asks `is_published`) publishes it again; the catalog step does not add a version twice.
    let mut urls = BTreeMap::new();
    let record = match &store {
        Some(client) => {
            let record = upload(client, tree, image, artifact, &files, events).await?;
            for (format, f) in &record.files {
                urls.insert(format.clone(), f.url.clone());
                written.push(format!("{} → {}", f.key, client.describe()));
            }
            Some(record)
        }
        None => None,
    };
    if let Some(vp) = schema::vagrant_of(image) {
        written.push(add_to_catalog(tree, image, artifact, vp, &files, &urls, store.as_ref()).await?);
    }
    if let (Some(client), Some(record)) = (&store, &record) {
        write_record(client, image, record).await?;
    }
    Ok(written)
}

/// Is `artifact` what `image` announces: the store's record names it and the Vagrant catalog lists
/// its boxes (by checksum)? `None` when the image publishes neither.
pub async fn is_published(tree: &Tree, image: &Image, artifact: &Artifact) -> Result<Option<bool>, BuildError> {
    let store = match image.publish.as_ref().and_then(|p| p.store()) {
        Some(name) => match tree.store(name.get_ref()) {
            Some(st) => Some(client(st, image).await?),
            None => return Ok(None),
        },
        None => None,
    };
    let vagrant = schema::vagrant_of(image);
    if store.is_none() && vagrant.is_none() {
        return Ok(None);
    }
    if let Some(client) = &store {
        let key = Published::key(&tree.name(), &image.name);
        let bytes = client.get_bytes(&key).await.map_err(|e| {
            BuildError::new(ErrorKind::Platform, format!("image `{}`: reading its publish record", image.name))
                .caused_by(e)
        })?;
        let named =
            bytes.and_then(|b| serde_json::from_slice::<Published>(&b).ok()).is_some_and(|r| r.artifact == artifact.id);
        if !named {
            return Ok(Some(false));
        }
    }
    if let Some(vp) = vagrant {
        let catalog = match &store {
            Some(client) => {
                let backend = StoreCatalog { client, key: vp.catalog.get_ref().clone() };
                match backend.read().await {
                    Ok(Some(b)) => imgbake_vagrant::Catalog::parse(&b).ok(),
                    Ok(None) => None,
                    Err(e) => return Err(catalog_failed(image, vp)(e)),
                }
            }
            None => imgbake_vagrant::read_local(&tree.path(&vp.catalog)).map_err(catalog_failed(image, vp))?,
        };
        let sums = box_checksums(artifact);
        if sums.is_empty() || catalog.is_none_or(|c| listed(&c, &sums).is_none()) {
            return Ok(Some(false));
        }
    }
    Ok(Some(true))
}

/// The artifact's box checksums by Vagrant provider.
pub(crate) fn box_checksums(artifact: &Artifact) -> BTreeMap<&'static str, String> {
    schema::FORMATS
        .iter()
        .filter_map(|f| Some((provider_of(f)?, artifact.extra.get(&format!("sha256.{f}"))?.clone())))
        .collect()
}

/// The catalog's version that already lists every one of these boxes (by provider and checksum).
pub(crate) fn listed(
    c: &imgbake_vagrant::Catalog,
    sums: &BTreeMap<&'static str, String>,
) -> Option<imgbake_vagrant::Version> {
    c.versions
        .iter()
        .find(|v| {
            sums.iter().all(|(provider, sum)| {
                v.providers.iter().any(|p| p.name == *provider && p.checksum.as_deref() == Some(sum.as_str()))
            })
        })
        .cloned()
}

fn catalog_failed<'a>(image: &'a Image, vp: &'a VagrantPublish) -> impl Fn(CatalogError) -> BuildError + 'a {
    move |e| {
        BuildError::new(ErrorKind::Platform, format!("image `{}`: updating the Vagrant catalog", image.name))
            .at(Span::new(vp.catalog.span()))
            .caused_by(e)
    }
}

/// Upload every file; the record naming them is written by [`write_record`] once all is done.
async fn upload(
    client: &Client,
    tree: &Tree,
    image: &Image,
    artifact: &Artifact,
    files: &BTreeMap<String, PathBuf>,
    events: &EventSink,
) -> Result<Published, BuildError> {
    let tree_name = tree.name();
    let mut record = Published {
        imgbake_published: crate::published::VERSION,
        tree: tree_name.clone(),
        image: image.name.clone(),
        artifact: artifact.id.clone(),
        fingerprint: artifact.fingerprint.clone(),
        build_id: artifact.build_id.clone(),
        published: Utc::now(),
        files: BTreeMap::new(),
        labels: BTreeMap::new(),
    };
    for (format, path) in files {
        let key = Published::file_key(&tree_name, &image.name, &artifact.id, &file_name(path));
        let progress = Events { sink: events, what: client.url_of(&key) };
        let object = client.upload(&key, path, &progress).await.map_err(|e| {
            BuildError::new(ErrorKind::Platform, format!("image `{}`: uploading {}", image.name, path.display()))
                .caused_by(e)
        })?;
        record.files.insert(
            format.clone(),
            PublishedFile { key: object.key.clone(), sha256: object.sha256, size: object.size, url: object.url },
        );
    }
    Ok(record)
}

/// The record of what `image` published (`TREE/IMAGE/latest.json`): the last write of a publish.
pub(crate) async fn write_record(client: &Client, image: &Image, record: &Published) -> Result<(), BuildError> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| BuildError::new(ErrorKind::Internal, format!("encoding the publish record: {e}")))?;
    client.put_bytes(&Published::key(&record.tree, &image.name), json, "application/json").await.map(|_| ()).map_err(
        |e| {
            BuildError::new(ErrorKind::Platform, format!("image `{}`: writing its publish record", image.name))
                .caused_by(e)
        },
    )
}

/// A catalog kept in a store.
pub(crate) struct StoreCatalog<'a> {
    pub(crate) client: &'a Client,
    pub(crate) key: String,
}

#[async_trait::async_trait]
impl Backend for StoreCatalog<'_> {
    fn location(&self) -> String {
        self.client.url_of(&self.key)
    }

    async fn read(&self) -> Result<Option<Vec<u8>>, CatalogError> {
        self.client
            .get_bytes(&self.key)
            .await
            .map_err(|e| CatalogError::backend(self.location(), "reading the catalog", e))
    }

    async fn write(&self, bytes: Vec<u8>) -> Result<(), CatalogError> {
        self.client
            .put_bytes(&self.key, bytes, "application/json")
            .await
            .map(|_| ())
            .map_err(|e| CatalogError::backend(self.location(), "writing the catalog", e))
    }
}

/// Add the artifact's boxes to the catalog as a new version; keep the newest N.
async fn add_to_catalog(
    tree: &Tree,
    image: &Image,
    artifact: &Artifact,
    vp: &VagrantPublish,
    files: &BTreeMap<String, PathBuf>,
    urls: &BTreeMap<String, String>,
    store: Option<&Client>,
) -> Result<String, BuildError> {
    let scheme = match vp.version.as_ref().map(|v| v.get_ref().as_str()) {
        Some("semver") => VersionScheme::Semver,
        _ => VersionScheme::Date,
    };
    let mut release = Release::new(scheme);
    release.description_markdown = Some(format!("imgbake build {} of image `{}`", artifact.build_id, image.name));
    for (format, path) in files {
        let Some(provider) = provider_of(format) else { continue };
        let sha = artifact.extra.get(&format!("sha256.{format}")).cloned().ok_or_else(|| {
            BuildError::new(ErrorKind::Internal, format!("artifact {} has no sha256 of its {format}", artifact.id))
        })?;
        let url = match (&vp.url, urls.get(format)) {
            (Some(u), _) => u.get_ref().replace("{file}", &file_name(path)),
            (None, Some(u)) => u.clone(),
            (None, None) => format!("file://{}", path.display()),
        };
        release = release.provider(Provider::new(provider, url, sha));
    }
    let name = vp.name.get_ref().clone();
    let keep = vp.keep.as_ref().map(|k| *k.get_ref() as usize).unwrap_or(5);
    let description = vp.description.clone();
    let sums = box_checksums(artifact);
    let apply = move |c: &mut imgbake_vagrant::Catalog| {
        if c.description.is_none() {
            c.description.clone_from(&description);
        }
        // Published again after a half-finished publish: the version is there already.
        if let Some(v) = listed(c, &sums) {
            return Ok((v.version, Vec::new()));
        }
        let v = c.add(release.clone())?;
        let removed = c.keep(keep)?;
        Ok((v.version, removed))
    };
    let failed = catalog_failed(image, vp);
    let (location, (version, removed)) = match store {
        Some(client) => {
            let backend = StoreCatalog { client, key: vp.catalog.get_ref().clone() };
            (backend.location(), imgbake_vagrant::update(&backend, &name, apply).await.map_err(failed)?)
        }
        None => {
            let path = tree.path(&vp.catalog);
            let at = path.clone();
            let n = name.clone();
            let r = tokio::task::spawn_blocking(move || imgbake_vagrant::update_local(&at, &n, apply))
                .await
                .map_err(|e| BuildError::new(ErrorKind::Internal, format!("updating the Vagrant catalog: {e}")))?
                .map_err(failed)?;
            (path.display().to_string(), r)
        }
    };
    // Boxes of versions the catalog no longer lists are removed when they are this store's, unless
    // a release channel points at their artifact (or would roll back to it).
    if let Some(client) = store {
        let base = client.url_of("");
        let prefix = format!("{}/{}/", tree.name(), image.name);
        let protected =
            if removed.is_empty() { Default::default() } else { crate::channel::protected(tree, image).await? };
        for p in removed.iter().flat_map(|v| &v.providers) {
            if let Some(key) = p.url.strip_prefix(&base)
                && key.starts_with(&prefix)
                && !protected.iter().any(|a| key.starts_with(&format!("{prefix}{a}/")))
                && let Err(e) = client.delete(key).await
            {
                tracing::warn!("removing {key} of an old box version: {e}");
            }
        }
    }
    let dropped = if removed.is_empty() {
        String::new()
    } else {
        format!(", dropped {}", removed.iter().map(|v| v.version.as_str()).collect::<Vec<_>>().join(", "))
    };
    Ok(format!("Vagrant box {name} {version} in {location}{dropped}"))
}
