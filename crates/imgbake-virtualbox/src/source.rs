//! Where a chain starts: a `.box`, `.ova` or `.ovf` by path, a box or OVA by URL (downloaded once
//! into a content-addressed cache and verified), or the newest box another agent published to a
//! store; and, for a child, its parent's artifact. Each is opened by imgbake (no manual unpacking).

use std::path::{Path, PathBuf};

use imgbake_config::{Image, Span, Tree};
use imgbake_core::builder::ResolvedSource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};

use crate::published::Published;
use crate::schema::{self, VirtualboxSource};

/// A package the build starts from, found but maybe not fetched yet.
#[derive(Clone, Debug)]
pub enum Package {
    /// A package (box, OVA, OVF) on this machine.
    Local(PathBuf),
    /// A plain disk on this machine (booted as it is, nothing to open).
    Disk(PathBuf),
    /// A URL with its expected SHA-256.
    Url {
        /// The URL.
        url: String,
        /// Its SHA-256.
        sha256: String,
    },
    /// A box or OVA in a store.
    Store {
        /// The store's name.
        store: String,
        /// The object's key.
        key: String,
        /// Its SHA-256 as published.
        sha256: String,
    },
}

fn config(image: &Image, msg: impl std::fmt::Display) -> BuildError {
    BuildError::new(ErrorKind::Config, format!("image `{}`: {msg}", image.name))
}

fn own_source(image: &Image) -> Result<&VirtualboxSource, BuildError> {
    image.source.as_ref().and_then(|s| schema::source_of(s.get_ref())).ok_or_else(|| {
        config(image, "has no parent and no source: set source = { box = \"path/to/base.box\" } (or ova, ovf, store)")
            .at(image.span)
    })
}

/// Resolve the root image's source to a package and its content id (`sha256:...`).
pub async fn resolve_package(tree: &Tree, image: &Image) -> Result<(Package, String, String), BuildError> {
    let src = own_source(image)?;
    if let Some((key, p)) = src.package() {
        let span = Span::new(p.span());
        let value = p.get_ref();
        if schema::is_url(value) {
            let sha = src
                .sha256
                .as_ref()
                .map(|s| s.get_ref().to_ascii_lowercase())
                .ok_or_else(|| config(image, format!("source.{key} is a URL: give its sha256 too")).at(span))?;
            let id = format!("sha256:{sha}");
            return Ok((Package::Url { url: value.clone(), sha256: sha }, id, format!("{key} {value}")));
        }
        let path = tree.path(p);
        let path =
            path.canonicalize().map_err(|e| config(image, format!("source.{key} {}: {e}", path.display())).at(span))?;
        let cache = tree.state_dir().join("virtualbox-source-hashes.json");
        let sha = imgbake_qemu::source::hash_cached(&path, &cache).await?;
        if let Some(want) = &src.sha256
            && !want.get_ref().eq_ignore_ascii_case(&sha)
        {
            return Err(config(
                image,
                format!("source.{key} {} has sha256 {sha}, not the {} the tree gives", path.display(), want.get_ref()),
            )
            .at(Span::new(want.span())));
        }
        let desc = format!("{key} {} (sha256:{})", path.display(), &sha[..12]);
        let package = if key == "disk" { Package::Disk(path) } else { Package::Local(path) };
        return Ok((package, format!("sha256:{sha}"), desc));
    }
    let (Some(st), Some(of)) = (&src.store, &src.image) else {
        return Err(config(image, "source needs box, ova, ovf, or store with image").at(image.span));
    };
    let store = tree
        .store(st.get_ref())
        .ok_or_else(|| config(image, format!("unknown store `{}`", st.get_ref())).at(Span::new(st.span())))?;
    let client = crate::publish::client(store, image).await?;
    let published = Published::read(&client, tree, of.get_ref()).await.map_err(|e| e.at(Span::new(of.span())))?;
    let (file, entry) = published.openable().ok_or_else(|| {
        config(
            image,
            format!(
                "image `{}` in store `{}` was published without a box or an OVA (formats: {}); publish one of them",
                of.get_ref(),
                st.get_ref(),
                published.files.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let desc = format!("{file} of `{}` {} from store `{}`", of.get_ref(), published.artifact, st.get_ref());
    Ok((
        Package::Store { store: st.get_ref().clone(), key: entry.key.clone(), sha256: entry.sha256.clone() },
        format!("sha256:{}", entry.sha256),
        desc,
    ))
}

/// The resolved source of a chain's root (`plan` fingerprints its id).
pub async fn resolve(tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
    let (_, id, description) = resolve_package(tree, image).await?;
    Ok(ResolvedSource::new(id, description))
}

/// Progress of a transfer, as `Transfer` events.
pub struct Events<'a> {
    /// Where events go.
    pub sink: &'a EventSink,
    /// What is moving.
    pub what: String,
}

impl imgbake_store::Progress for Events<'_> {
    fn transferred(&self, done: u64, total: Option<u64>) {
        self.sink.emit(EventKind::Transfer { path: self.what.clone(), done, total });
    }
}

/// The package as a local file: a path as is; a URL or a store object from (or into) the
/// content-addressed download cache, verified.
pub async fn fetch(
    tree: &Tree,
    image: &Image,
    package: &Package,
    cache_dir: &Path,
    events: &EventSink,
) -> Result<PathBuf, BuildError> {
    match package {
        Package::Local(p) | Package::Disk(p) => Ok(p.clone()),
        Package::Url { url, sha256 } => {
            let progress = Events { sink: events, what: url.clone() };
            imgbake_store::fetch(url, sha256, cache_dir, &progress).await.map_err(|e| {
                BuildError::new(ErrorKind::Platform, format!("image `{}`: downloading its source", image.name))
                    .caused_by(e)
            })
        }
        Package::Store { store, key, sha256 } => {
            // Both come from the store's record: neither may lead outside the cache.
            let file = key.rsplit('/').next().unwrap_or("");
            let sane_file = !file.is_empty() && file != "." && file != ".." && !file.contains('\\');
            if !(sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) && sane_file) {
                return Err(config(
                    image,
                    format!(
                        "the record in store `{store}` names `{key}` with sha256 `{sha256}`, which imgbake did not write"
                    ),
                ));
            }
            let dest = cache_dir.join(sha256.to_ascii_lowercase()).join(file);
            if dest.exists() {
                // A cache hit is still checked: a truncated or altered file is fetched again.
                let path = dest.clone();
                let got = tokio::task::spawn_blocking(move || {
                    crate::format::hash_file(&path, crate::format::Algorithm::Sha256)
                })
                .await
                .ok()
                .and_then(Result::ok);
                if got.is_some_and(|h| h.eq_ignore_ascii_case(sha256)) {
                    return Ok(dest);
                }
                imgbake_qemu::process::remove_file(&dest)?;
            }
            let st = tree.store(store).ok_or_else(|| config(image, format!("unknown store `{store}`")))?;
            let client = crate::publish::client(st, image).await?;
            let progress = Events { sink: events, what: client.url_of(key) };
            client.download(key, &dest, Some(sha256), &progress).await.map_err(|e| {
                BuildError::new(
                    ErrorKind::Platform,
                    format!("image `{}`: downloading its source from store `{store}`", image.name),
                )
                .caused_by(e)
            })?;
            Ok(dest)
        }
    }
}
