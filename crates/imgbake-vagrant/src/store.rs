//! Read-modify-write of a catalog: a local file under a lock, or any store through [`Backend`].
//!
//! A publish reads the catalog, adds its version (and drops old ones), and writes it back.
//! Two publishes of the same box at once must not lose a version, and a consumer must never
//! download half a catalog:
//!
//! - [`update_local`] holds an exclusive `flock` on `<catalog>.lock` (beside the catalog, never
//!   deleted) for the whole read-modify-write, and replaces the catalog atomically: a temp file
//!   in the same directory, written, fsynced, renamed over the catalog, then the directory
//!   fsynced. Readers see the old or the new catalog, never a mix.
//! - [`update`] does the same through a [`Backend`] (HTTP PUT, S3, …). Stores have no locks:
//!   a backend that can write conditionally (`If-Match` on the ETag of its last read) returns
//!   [`CatalogError::conflict`] when it lost a race, and [`update`] reads and applies the change
//!   again. A backend without conditional writes is last-writer-wins.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::error::CatalogError;

/// How many times [`update`] re-reads and re-applies after [`CatalogError::Conflict`].
pub const CONFLICT_RETRIES: u32 = 5;

/// A place a catalog is stored: the lead's remote stores implement it.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Where the catalog is, for messages (`s3://bucket/team/base/metadata.json`).
    fn location(&self) -> String;

    /// The catalog's bytes, or `None` if there is no catalog yet.
    async fn read(&self) -> Result<Option<Vec<u8>>, CatalogError>;

    /// Replaces the catalog with `bytes`, atomically (readers see the old or the new one).
    /// Returns [`CatalogError::conflict`] if the catalog changed since the last [`read`](Self::read)
    /// and the store could tell.
    async fn write(&self, bytes: Vec<u8>) -> Result<(), CatalogError>;
}

/// Reads the catalog of box `name` from `backend` (a new empty one if there is none), lets `f`
/// change it and writes it back; `f`'s error aborts without writing. On a write conflict the
/// catalog is read again and `f` runs again on it (up to [`CONFLICT_RETRIES`] times), so `f`
/// must only depend on the catalog it is given.
pub async fn update<B, T, F>(backend: &B, name: &str, mut f: F) -> Result<T, CatalogError>
where
    B: Backend + ?Sized,
    F: FnMut(&mut Catalog) -> Result<T, CatalogError> + Send,
{
    let location = backend.location();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut catalog = load(backend.read().await?.as_deref(), name, &location)?;
        let out = f(&mut catalog)?;
        match backend.write(catalog.to_json()).await {
            Ok(()) => return Ok(out),
            Err(CatalogError::Conflict { .. }) if attempts <= CONFLICT_RETRIES => continue,
            Err(CatalogError::Conflict { location, .. }) => return Err(CatalogError::Conflict { location, attempts }),
            Err(e) => return Err(e),
        }
    }
}

/// Reads the local catalog `path` of box `name` (a new empty one if the file does not exist;
/// its directory is created), lets `f` change it and replaces the file atomically, all under an
/// exclusive lock on `<path>.lock`, so that concurrent publishes (threads or processes) apply
/// one after the other. `f`'s error aborts without writing.
///
/// Blocking (file I/O and waiting for the lock): from async code, call it in
/// `tokio::task::spawn_blocking`.
pub fn update_local<T>(
    path: &Path,
    name: &str,
    f: impl FnOnce(&mut Catalog) -> Result<T, CatalogError>,
) -> Result<T, CatalogError> {
    let location = path.display().to_string();
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| CatalogError::io("creating the catalog's directory", &dir, e))?;
    let lock_path = lock_path(path);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| CatalogError::io("opening the catalog's lock file", &lock_path, e))?;
    lock.lock().map_err(|e| CatalogError::io("locking the catalog (flock)", &lock_path, e))?;

    let bytes = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(CatalogError::io("reading the catalog", path, e)),
    };
    let mut catalog = load(bytes.as_deref(), name, &location)?;
    let out = f(&mut catalog)?;
    write_atomic(path, &catalog.to_json())?;
    // Dropping `lock` closes it, which releases the flock.
    drop(lock);
    Ok(out)
}

/// Reads a local catalog without locking (a reader never needs the lock: writes are atomic).
/// `None` if the file does not exist.
pub fn read_local(path: &Path) -> Result<Option<Catalog>, CatalogError> {
    match std::fs::read(path) {
        Ok(bytes) => Catalog::parse_at(&bytes, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CatalogError::io("reading the catalog", path, e)),
    }
}

/// Replaces `path` with `bytes` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory. The file keeps the permissions of the file it replaces (a new one
/// is world-readable, `0644`: a catalog is served to consumers).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CatalogError> {
    let dir = parent_dir(path);
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => 0o644,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".metadata-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| CatalogError::io("creating a temp file beside the catalog", &dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let io = |what: &str, e| CatalogError::io(what.to_owned(), &tmp_path, e);
    tmp.write_all(bytes).map_err(|e| io("writing the new catalog", e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("setting the new catalog's permissions", e))?;
    tmp.as_file().sync_all().map_err(|e| io("flushing the new catalog to disk", e))?;
    tmp.persist(path).map_err(|e| CatalogError::io("renaming the new catalog into place", path, e.error))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CatalogError::io("flushing the catalog's directory to disk", &dir, e))?;
    Ok(())
}

/// The lock file of a local catalog: `<path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "metadata.json".into());
    name.push(".lock");
    path.with_file_name(name)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn load(bytes: Option<&[u8]>, name: &str, location: &str) -> Result<Catalog, CatalogError> {
    match bytes {
        None => Ok(Catalog::new(name)),
        Some(bytes) => {
            let catalog = Catalog::parse_at(bytes, location)?;
            catalog.check_name(name, location)?;
            Ok(catalog)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;
    use crate::{Provider, Release, VersionScheme};

    const SUM: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn release(url: String) -> Release {
        Release::new(VersionScheme::Date).provider(Provider::new("virtualbox", url, SUM))
    }

    #[test]
    fn creates_then_updates_a_local_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("team/base/metadata.json");
        let v1 = update_local(&path, "team/base", |c| c.add(release("u1".into()))).unwrap();
        let v2 = update_local(&path, "team/base", |c| c.add(release("u2".into()))).unwrap();
        let c = read_local(&path).unwrap().unwrap();
        assert_eq!(c.versions.len(), 2);
        assert_eq!(c.newest().unwrap().version, v2.version);
        assert_ne!(v1.version, v2.version);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "served catalogs must be readable");
        assert!(lock_path(&path).exists());
        // Only the catalog and its lock: no temp files left behind.
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn failed_closure_and_wrong_name_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        update_local(&path, "team/base", |c| c.add(release("u1".into()))).unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = update_local(&path, "team/base", |c| c.keep(0)).unwrap_err();
        assert!(matches!(err, CatalogError::InvalidKeep));
        let err = update_local(&path, "team/other", |c| c.add(release("u2".into()))).unwrap_err();
        assert!(matches!(err, CatalogError::NameMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        std::fs::write(&path, b"{ broken").unwrap();
        let err = update_local(&path, "team/base", |c| c.add(release("u3".into()))).unwrap_err();
        assert!(matches!(err, CatalogError::Malformed { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{ broken");
    }

    #[test]
    fn concurrent_local_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("metadata.json"));
        let threads = 8;
        let per_thread = 10;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let path = Arc::clone(&path);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..per_thread {
                        update_local(&path, "team/base", |c| {
                            // Widen the read-modify-write window.
                            std::thread::yield_now();
                            c.add(release(format!("u/{t}/{i}")))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let c = read_local(&path).unwrap().unwrap();
        assert_eq!(c.versions.len(), threads * per_thread);
        let mut urls: Vec<_> = c.versions.iter().map(|v| v.providers[0].url.clone()).collect();
        urls.sort();
        urls.dedup();
        assert_eq!(urls.len(), threads * per_thread, "every publish is in the catalog once");
        let mut versions: Vec<_> = c.versions.iter().map(|v| crate::GemVersion::parse(&v.version).unwrap()).collect();
        let in_file_order = versions.clone();
        versions.sort();
        assert_eq!(versions, in_file_order, "appended in increasing order");
        versions.dedup();
        assert_eq!(versions.len(), threads * per_thread, "versions are unique");
    }

    /// An in-memory store with conditional writes: a write fails with a conflict when the
    /// stored generation moved since this task's read.
    struct MemoryStore {
        state: Mutex<(u64, Option<Vec<u8>>)>,
        seen: Mutex<std::collections::HashMap<std::thread::ThreadId, u64>>,
    }

    #[async_trait::async_trait]
    impl Backend for MemoryStore {
        fn location(&self) -> String {
            "memory://team/base/metadata.json".into()
        }
        async fn read(&self) -> Result<Option<Vec<u8>>, CatalogError> {
            let state = self.state.lock().unwrap();
            self.seen.lock().unwrap().insert(std::thread::current().id(), state.0);
            Ok(state.1.clone())
        }
        async fn write(&self, bytes: Vec<u8>) -> Result<(), CatalogError> {
            tokio::task::yield_now().await;
            let mut state = self.state.lock().unwrap();
            let seen = self.seen.lock().unwrap().get(&std::thread::current().id()).copied();
            if seen != Some(state.0) {
                return Err(CatalogError::conflict(self.location()));
            }
            *state = (state.0 + 1, Some(bytes));
            Ok(())
        }
    }

    #[test]
    fn backend_updates_retry_conflicts_and_lose_nothing() {
        let store = Arc::new(MemoryStore { state: Mutex::new((0, None)), seen: Mutex::default() });
        let threads = 4;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    let mut conflicts_survived = 0;
                    for i in 0..10 {
                        let r = rt.block_on(update(&*store, "team/base", |c| c.add(release(format!("u/{t}/{i}")))));
                        match r {
                            Ok(_) => {}
                            Err(CatalogError::Conflict { attempts, .. }) => {
                                assert_eq!(attempts, CONFLICT_RETRIES + 1);
                                conflicts_survived += 1;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    10 - conflicts_survived
                })
            })
            .collect();
        let written: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let bytes = store.state.lock().unwrap().1.clone().unwrap();
        let c = Catalog::parse(&bytes).unwrap();
        assert_eq!(c.versions.len(), written, "every update reported as written is in the catalog");
        assert!(written > 0);

        let err = block_on(update(&*store, "team/other", |c| c.add(release("x".into())))).unwrap_err();
        assert!(matches!(err, CatalogError::NameMismatch { .. }), "{err}");
        assert!(err.to_string().contains("memory://"), "{err}");
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }
}
