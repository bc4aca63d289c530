//! Where a chain starts: `source.disk` (qcow2 or raw) and an optional kernel for direct boot, and
//! its content fingerprint (cached by path, size and modification time, so planning a tree does not
//! re-read a multi-GiB disk every time).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use imgbake_config::{Image, Span, Tree};
use imgbake_core::builder::ResolvedSource;
use imgbake_core::error::{BuildError, ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk;
use crate::error::QemuError;

/// The start of a chain, resolved to files.
#[derive(Clone, Debug)]
pub struct RootSource {
    /// The disk, canonical (symlinks resolved).
    pub disk: PathBuf,
    /// Its format (`qcow2`, `raw`...).
    pub format: String,
    /// Its virtual size.
    pub virtual_size: u64,
    /// Direct kernel boot: kernel, initrd, command line.
    pub kernel: Option<(PathBuf, Option<PathBuf>, Option<String>)>,
}

/// The chain's first image: `image` itself or its oldest ancestor.
pub fn chain_root<'a>(tree: &'a Tree, image: &'a Image) -> &'a Image {
    tree.ancestors(&image.name).last().and_then(|n| tree.image(n)).unwrap_or(image)
}

/// The files `image`'s `source` names (it must be the root of a chain).
pub async fn root_source(tree: &Tree, image: &Image) -> Result<RootSource, BuildError> {
    let missing = || {
        BuildError::new(
            ErrorKind::Config,
            format!(
                "image `{}` has no parent and no source.disk: set source = {{ disk = \"path/to/base.qcow2\" }}",
                image.name
            ),
        )
        .at(image.span)
    };
    let src = image.source.as_ref().ok_or_else(missing)?;
    let own = crate::schema::source_of(src.get_ref());
    let disk_value = own.disk.as_ref().ok_or_else(missing)?;
    let span = Span::new(disk_value.span());
    let disk = disk::canonical(&tree.path(disk_value)).map_err(|e| {
        BuildError::new(ErrorKind::Config, format!("image `{}`: source disk: {e}", image.name)).at(span).caused_by(e)
    })?;
    let info = disk::info(&disk)
        .await
        .map_err(|e| e.build(ErrorKind::Config, format!("image `{}`: source disk", image.name)).at(span))?;
    if !["qcow2", "raw"].contains(&info.format.as_str()) {
        return Err(BuildError::new(
            ErrorKind::Config,
            format!("image `{}`: source disk {} is {}; use qcow2 or raw", image.name, disk.display(), info.format),
        )
        .at(span));
    }
    let kernel =
        own.kernel.as_ref().map(|k| (tree.path(k), own.initrd.as_ref().map(|i| tree.path(i)), own.append.clone()));
    Ok(RootSource { disk, format: info.format, virtual_size: info.virtual_size, kernel })
}

/// The resolved source of a chain root: its id is the content hash of the disk (and kernel, initrd,
/// command line when given), so a changed base image changes every fingerprint below it.
pub async fn resolve(tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
    let root = root_source(tree, image).await?;
    let cache = tree.state_dir().join("qemu-source-hashes.json");
    let mut parts = vec![hash_cached(&root.disk, &cache).await?];
    if let Some((k, i, a)) = &root.kernel {
        parts.push(hash_cached(k, &cache).await?);
        if let Some(i) = i {
            parts.push(hash_cached(i, &cache).await?);
        }
        if let Some(a) = a {
            parts.push(hex::encode(Sha256::digest(a.as_bytes())));
        }
    }
    let id = if parts.len() == 1 {
        format!("sha256:{}", parts[0])
    } else {
        format!("sha256:{}", hex::encode(Sha256::digest(parts.join("\n").as_bytes())))
    };
    Ok(ResolvedSource {
        details: Default::default(),
        description: format!(
            "{} ({}, {} MiB virtual, {}{})",
            root.disk.display(),
            root.format,
            root.virtual_size >> 20,
            &id[..19.min(id.len())],
            if root.kernel.is_some() { ", direct kernel boot" } else { "" }
        ),
        id,
    })
}

#[derive(Default, Serialize, Deserialize)]
struct HashCache {
    #[serde(default)]
    files: BTreeMap<String, CachedHash>,
}

#[derive(Clone, Serialize, Deserialize)]
struct CachedHash {
    size: u64,
    mtime_ns: i128,
    sha256: String,
}

fn stamp(path: &Path) -> Result<(u64, i128), QemuError> {
    let meta = std::fs::metadata(path).map_err(|e| QemuError::io("reading", path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(-1);
    Ok((meta.len(), mtime))
}

/// The sha256 of a file, from the cache when its size and mtime are unchanged.
pub async fn hash_cached(path: &Path, cache: &Path) -> Result<String, BuildError> {
    let path = path.to_path_buf();
    let cache = cache.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<String, QemuError> {
        let key = path.display().to_string();
        let (size, mtime_ns) = stamp(&path)?;
        let mut db: HashCache =
            std::fs::read(&cache).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        if let Some(c) = db.files.get(&key)
            && c.size == size
            && c.mtime_ns == mtime_ns
        {
            return Ok(c.sha256.clone());
        }
        let mut f = std::fs::File::open(&path).map_err(|e| QemuError::io("opening", &path, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| QemuError::io("reading", &path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha256 = hex::encode(h.finalize());
        db.files.insert(key, CachedHash { size, mtime_ns, sha256: sha256.clone() });
        // The cache is only an optimisation: failing to write it is not an error.
        if let Some(dir) = cache.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(text) = serde_json::to_vec(&db) {
            let tmp = cache.with_extension("json.tmp");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &cache);
            }
        }
        Ok(sha256)
    })
    .await
    .map_err(|e| BuildError::new(ErrorKind::Local, format!("hashing the source disk: {e}")))?
    .map_err(BuildError::from)
}
