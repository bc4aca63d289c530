//! imgbake's artifact stores: where images publish their files (`publish = { store = "NAME" }`)
//! and where a child image built on another machine finds its parent's
//! (`source = { store = "NAME", image = "base" }`).
//!
//! A store is a `[stores.NAME]` table ([`imgbake_config::Store`]) of one of two kinds:
//!
//! - `http`: an Artifactory-style server (`PUT` with `X-Checksum-Sha256`/`-Sha1`, `GET`, `HEAD`,
//!   `DELETE`), basic or bearer auth from environment variables or sensitive variables;
//! - `s3`: a bucket and key prefix through the AWS SDK and the AWS credential chain;
//!   multipart uploads for large files.
//!
//! What every operation guarantees:
//!
//! - **Checksums**: sha256 (and sha1) are computed in one pass, off the async workers, and sent
//!   along so the server can refuse a damaged body; downloads are hashed while they arrive and
//!   checked against the sha256 asked for, else the one the store recorded
//!   (`X-Checksum-Sha256`, the `KEY.sha256` sidecar of `http` stores, S3's `imgbake-sha256`
//!   metadata). A mismatch fails with both hashes and keeps nothing.
//! - **Atomicity**: downloads land in `DEST.partial` and are renamed into place only once
//!   verified; the servers publish an upload only once it is complete (S3 multipart: after
//!   `CompleteMultipartUpload`; a failed one is aborted).
//! - **Resume and retry**: transient failures (connection errors, 5xx, 408, 429, a connection
//!   lost mid-body, a stall) are retried with jittered exponential backoff; a download resumes
//!   its `.partial` with a `Range` request, in the same call or the next one.
//! - **Progress**: [`Progress::transferred`] at most four times a second.
//! - **Errors**: [`StoreError`], one line naming the store, the object and what to check.
//!
//! ```no_run
//! use std::path::Path;
//! use imgbake_store::{Client, NoProgress};
//!
//! # async fn demo(store: &imgbake_config::Store) -> Result<(), imgbake_store::StoreError> {
//! let client = Client::open(store).await?; // reads credentials from the environment now
//! let object = client.upload("base/1.0/base.box", Path::new("out/base.box"), &NoProgress).await?;
//! println!("published {} ({} bytes, sha256 {})", object.url, object.size, object.sha256);
//!
//! // Elsewhere: fetch it back, verified against the checksum recorded at publish time.
//! client.download("base/1.0/base.box", Path::new("cache/base.box"), Some(&object.sha256), &NoProgress).await?;
//!
//! // A plain URL into a content-addressed cache: a second call makes no request.
//! let path = imgbake_store::fetch(&object.url, &object.sha256, Path::new("cache"), &NoProgress).await?;
//! # let _ = path; Ok(()) }
//! ```

mod digest;
mod error;
mod http;
mod s3;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::StoreError;

use crate::digest::normalize_sha256;
use crate::http::{Http, HttpStore, Secret};
use crate::s3::S3Store;
use crate::transfer::{Origin, check_key, encode_path};

/// Receives transfer progress: bytes done so far and the total when known. Called at most a
/// few times per second, and once at the end.
pub trait Progress: Send + Sync {
    /// `done` of `total` bytes moved.
    fn transferred(&self, done: u64, total: Option<u64>);
}

/// Progress nobody watches.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn transferred(&self, _done: u64, _total: Option<u64>) {}
}

impl<F: Fn(u64, Option<u64>) + Send + Sync> Progress for F {
    fn transferred(&self, done: u64, total: Option<u64>) {
        self(done, total)
    }
}

/// Knobs with good defaults; tests and benchmarks lower them.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Attempts per request (transient failures only). Default 5.
    pub attempts: u32,
    /// A transfer with no byte moving this long is broken (and retried). Default 60 s.
    pub stall_timeout: Duration,
    /// `s3`: files of at least this size go up in parts. Default 64 MiB.
    pub multipart_threshold: u64,
    /// `s3`: part size (at least 5 MiB; raised so a file needs at most 10 000). Default 16 MiB.
    pub part_size: u64,
    /// `s3`: parts in flight at once. Default 4.
    pub concurrency: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            attempts: 5,
            stall_timeout: Duration::from_secs(60),
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            concurrency: 4,
        }
    }
}

/// An object in a store, as uploaded or downloaded (checksums verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The key, relative to the store's prefix.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Lowercase hex sha1.
    pub sha1: String,
    /// Where a consumer GETs it ([`Client::url_of`]).
    pub url: String,
}

/// What a store says about an object without fetching it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the store's prefix.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// The sha256 the store recorded (Artifactory's header, S3 metadata), if any.
    pub sha256: Option<String>,
    /// The sha1 the store recorded, if any.
    pub sha1: Option<String>,
    /// The entity tag, if any.
    pub etag: Option<String>,
    /// Where a consumer GETs it.
    pub url: String,
}

// Boxed: one per client, and the hyper client is large.
#[derive(Clone, Debug)]
enum Kind {
    Http(Box<HttpStore>),
    S3(S3Store),
}

#[derive(Debug)]
struct Inner {
    name: String,
    kind: Kind,
    tuning: Tuning,
}

/// A connection to one store; cheap to clone. `Debug` shows no credentials.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Opens `store`: checks its settings and reads its credentials from the environment now,
    /// so a missing variable fails before any build work. `s3` stores use the AWS credential
    /// chain (environment, profile, SSO, instance role); with `endpoint_url`, path-style
    /// addressing.
    pub async fn open(store: &imgbake_config::Store) -> Result<Client, StoreError> {
        let kind = match store.kind.get_ref().as_str() {
            "http" => Kind::Http(Box::new(open_http(store)?)),
            "s3" => {
                reject_http_credentials(store)?;
                Kind::S3(S3Store::open(store, label("s3", &store.name)).await?)
            }
            other => return Err(unknown_kind(store, other)),
        };
        Ok(Client::from_kind(store, kind))
    }

    /// Opens the store called `name` among `stores` (e.g. `config.stores()`).
    pub async fn open_named<'a>(
        stores: impl IntoIterator<Item = (&'a String, &'a imgbake_config::Store)>,
        name: &str,
    ) -> Result<Client, StoreError> {
        let mut known = Vec::new();
        for (n, store) in stores {
            if n == name {
                let mut store = store.clone();
                store.name = n.clone();
                return Client::open(&store).await;
            }
            known.push(n.clone());
        }
        Err(StoreError::UnknownStore { name: name.to_owned(), known })
    }

    /// An `s3` store with the given SDK configuration (credentials, region, endpoint, HTTP
    /// client) instead of the environment's; the store's own `region` and `endpoint_url` still
    /// win. For tests against moto and for callers that already hold an `SdkConfig`.
    pub fn s3_with_config(
        store: &imgbake_config::Store,
        sdk_config: &aws_config::SdkConfig,
    ) -> Result<Client, StoreError> {
        if store.kind.get_ref() != "s3" {
            return Err(StoreError::Config {
                store: store.name.clone(),
                message: format!("`type = \"{}\"`, not `s3`", store.kind.get_ref()),
            });
        }
        reject_http_credentials(store)?;
        let kind = Kind::S3(S3Store::with_config(store, sdk_config, label("s3", &store.name))?);
        Ok(Client::from_kind(store, kind))
    }

    fn from_kind(store: &imgbake_config::Store, kind: Kind) -> Client {
        Client { inner: Arc::new(Inner { name: store.name.clone(), kind, tuning: Tuning::default() }) }
    }

    /// The same store with other [`Tuning`].
    pub fn with_tuning(&self, tuning: Tuning) -> Client {
        Client { inner: Arc::new(Inner { name: self.inner.name.clone(), kind: self.inner.kind.clone(), tuning }) }
    }

    /// The tuning in use.
    pub fn tuning(&self) -> &Tuning {
        &self.inner.tuning
    }

    /// The store's name (`NAME` of `[stores.NAME]`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// "http store `artifacts` (https://host/repo/prefix)", "s3 store `x` (s3://bucket/prefix)".
    pub fn describe(&self) -> String {
        match &self.inner.kind {
            Kind::Http(h) => format!("{} ({})", h.http.label, h.base),
            Kind::S3(s) => format!("{} ({})", s.label, s.location()),
        }
    }

    /// Where a consumer GETs `key`: `url/prefix/key` for `http`; for `s3` the endpoint's
    /// path-style URL, else `https://BUCKET.s3.REGION.amazonaws.com/prefix/key`.
    pub fn url_of(&self, key: &str) -> String {
        match &self.inner.kind {
            Kind::Http(h) => h.url_of(key),
            Kind::S3(s) => s.url_of(key),
        }
    }

    /// Uploads `file` as `key`, hashing it first (sha256 + sha1, one pass) and checking the
    /// stored size afterwards. Nothing appears under `key` unless the upload completes.
    pub async fn upload(&self, key: &str, file: &Path, progress: &dyn Progress) -> Result<Object, StoreError> {
        check_key(key)?;
        let t = &self.inner.tuning;
        match &self.inner.kind {
            Kind::Http(h) => h.upload(key, file, progress, t).await,
            Kind::S3(s) => s.upload(key, file, progress, t).await,
        }
    }

    /// Downloads `key` to `dest` through `DEST.partial` (resumed if present), verifying the
    /// size and the sha256: `sha256` if given, else the one the store recorded (if any).
    pub async fn download(
        &self,
        key: &str,
        dest: &Path,
        sha256: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<Object, StoreError> {
        check_key(key)?;
        let expected = match sha256 {
            Some(s) => Some(normalize_sha256(s).ok_or_else(|| StoreError::Config {
                store: self.inner.name.clone(),
                message: format!("`{s}` is not a sha256 (64 hex digits) for `{key}`"),
            })?),
            None => None,
        };
        let t = &self.inner.tuning;
        match &self.inner.kind {
            Kind::Http(h) => h.download(key, dest, expected, progress, t).await,
            Kind::S3(s) => s.download(key, dest, expected, progress, t).await,
        }
    }

    /// Size and recorded checksums of `key`; `None` if it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        check_key(key)?;
        match &self.inner.kind {
            Kind::Http(h) => h.head(key, &self.inner.tuning).await,
            Kind::S3(s) => s.head(key).await,
        }
    }

    /// Stores a small object held in memory (metadata, catalogs) with checksums.
    pub async fn put_bytes(&self, key: &str, data: Vec<u8>, content_type: &str) -> Result<Object, StoreError> {
        check_key(key)?;
        match &self.inner.kind {
            Kind::Http(h) => h.put_bytes(key, data, content_type, &self.inner.tuning).await,
            Kind::S3(s) => s.put_bytes(key, data, content_type).await,
        }
    }

    /// A small object's bytes, checked against the recorded sha256 if the store has one;
    /// `None` if it does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        match &self.inner.kind {
            Kind::Http(h) => h.get_bytes(key, &self.inner.tuning).await,
            Kind::S3(s) => s.get_bytes(key, &self.inner.tuning).await,
        }
    }

    /// Deletes `key` (and its `.sha256` sidecar on `http` stores); a missing object is fine.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        match &self.inner.kind {
            Kind::Http(h) => h.delete(key, &self.inner.tuning).await,
            Kind::S3(s) => s.delete(key).await,
        }
    }
}

fn label(kind: &str, name: &str) -> String {
    format!("{kind} store `{name}`")
}

fn unknown_kind(store: &imgbake_config::Store, other: &str) -> StoreError {
    StoreError::Config { store: store.name.clone(), message: format!("unknown type `{other}` (use `http` or `s3`)") }
}

fn reject_http_credentials(store: &imgbake_config::Store) -> Result<(), StoreError> {
    let set = store.username.is_some()
        || store.password.is_some()
        || store.token.is_some()
        || store.username_env.is_some()
        || store.password_env.is_some()
        || store.token_env.is_some();
    if set {
        return Err(StoreError::Config {
            store: store.name.clone(),
            message: "username/password/token settings are for `http` stores; `s3` uses the AWS credential chain"
                .into(),
        });
    }
    Ok(())
}

/// A credential: the literal value, else the environment variable's (which must be set).
fn credential(
    store: &imgbake_config::Store,
    literal: &Option<String>,
    env: &Option<imgbake_config::Spanned<String>>,
    setting: &'static str,
) -> Result<Option<(String, String)>, StoreError> {
    if let Some(value) = literal {
        return Ok(Some((value.clone(), format!("`{}`", setting.trim_end_matches("_env")))));
    }
    let Some(var) = env else { return Ok(None) };
    let var = var.get_ref().trim().to_owned();
    match std::env::var(&var) {
        Ok(value) if !value.is_empty() => Ok(Some((value, var))),
        _ => Err(StoreError::MissingCredential { store: store.name.clone(), var, setting }),
    }
}

fn open_http(store: &imgbake_config::Store) -> Result<HttpStore, StoreError> {
    let config_error = |message: String| StoreError::Config { store: store.name.clone(), message };
    let url = store.url.as_ref().map(|u| u.get_ref().trim().to_owned()).unwrap_or_default();
    if url.is_empty() {
        return Err(config_error("`type = \"http\"` needs `url`".into()));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| config_error(format!("`url = \"{url}\"` is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(config_error(format!("`url = \"{url}\"` must be http:// or https:// with a host")));
    }
    if uri.query().is_some() {
        return Err(config_error(format!("`url = \"{url}\"` may not have a query")));
    }
    let mut base = url.trim_end_matches('/').to_owned();
    let prefix = store.prefix.as_deref().unwrap_or("").trim_matches('/');
    if !prefix.is_empty() {
        base.push('/');
        base.push_str(&encode_path(prefix));
    }

    let token = credential(store, &store.token, &store.token_env, "token_env")?;
    let user = credential(store, &store.username, &store.username_env, "username_env")?;
    let password = credential(store, &store.password, &store.password_env, "password_env")?;
    let (auth, hint) = match (token, user, password) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(config_error("set either a token or a username and password, not both".into()));
        }
        (Some((token, from)), None, None) => {
            (Some(Secret::bearer(&token).map_err(config_error)?), format!("check the token in {from}"))
        }
        (None, Some((user, user_from)), Some((password, password_from))) => (
            Some(Secret::basic(&user, &password).map_err(config_error)?),
            format!("check the credentials in {user_from}/{password_from}"),
        ),
        (None, Some(_), None) | (None, None, Some(_)) => {
            return Err(config_error(
                "basic auth needs both a user name (`username_env` or `username`) and a password (`password_env` or `password`)"
                    .into(),
            ));
        }
        (None, None, None) => {
            (None, "the store sends no credentials: set `username_env`/`password_env` or `token_env`".to_owned())
        }
    };
    let http = Http::new(label("http", &store.name), auth, hint).map_err(config_error)?;
    Ok(HttpStore { http, base })
}

/// Downloads a plain `http(s)` URL into a content-addressed cache, `cache_dir/SHA256/FILENAME`
/// (FILENAME: the URL's last path segment), and returns that path.
///
/// A file already in the cache costs no request, but is hashed again: a truncated or altered file
/// is removed and fetched again. An interrupted download resumes from `FILENAME.partial` with a
/// `Range` request; the bytes must hash to `sha256`, else nothing is kept.
pub async fn fetch(url: &str, sha256: &str, cache_dir: &Path, progress: &dyn Progress) -> Result<PathBuf, StoreError> {
    let bad = |message: String| StoreError::Config { store: url.to_owned(), message };
    let sha = normalize_sha256(sha256).ok_or_else(|| bad(format!("`{sha256}` is not a sha256 (64 hex digits)")))?;
    let uri: hyper::Uri = url.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
    let Some(authority) = uri.authority().filter(|_| matches!(uri.scheme_str(), Some("http" | "https"))) else {
        return Err(bad("only http:// and https:// URLs can be fetched".into()));
    };
    let dest = cache_dir.join(&sha).join(cache_file_name(uri.path()));
    if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
        let held = digest::hash_file(&dest, None, None).await.ok().map(|(d, _)| d.sha256_hex());
        if held.as_deref() == Some(sha.as_str()) {
            return Ok(dest);
        }
        tokio::fs::remove_file(&dest).await.map_err(|source| StoreError::Io {
            context: format!("removing {}, a cached download that no longer matches its sha256", dest.display()),
            source,
        })?;
    }
    let http = Http::new(format!("host {authority}"), None, "the URL needs credentials, and fetch sends none".into())
        .map_err(bad)?;
    let tuning = Tuning::default();
    let origin = Origin { store: &http.label, key: url };
    transfer::download(origin, &dest, Some(sha), &tuning, progress, |offset| {
        http.open_download(url, url, offset, None, tuning.stall_timeout)
    })
    .await?;
    Ok(dest)
}

/// The URL path's last segment, made safe as a file name.
fn cache_file_name(path: &str) -> String {
    let last = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    let name: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    if name.is_empty() || name.chars().all(|c| c == '.') { "download".to_owned() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names() {
        assert_eq!(cache_file_name("/a/b/base.box"), "base.box");
        assert_eq!(cache_file_name("/a/b/"), "b");
        assert_eq!(cache_file_name("/"), "download");
        assert_eq!(cache_file_name("/x/.."), "download");
        assert_eq!(cache_file_name("/x/a%20b"), "a_20b");
    }
}
