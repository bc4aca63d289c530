//! `type = "http"`: an Artifactory-style store (any server taking `PUT`, serving `GET`/`HEAD`
//! with ranges, and `DELETE`; Artifactory, nginx WebDAV, Nexus raw repositories).
//!
//! Uploads send `X-Checksum-Sha256` / `X-Checksum-Sha1` (Artifactory refuses a body that does
//! not match them) and a `KEY.sha256` sidecar file: servers that ignore the headers (nginx)
//! still let a later download verify the object without being told its checksum.
//!
//! One hyper client per store: HTTP/1.1 with keep-alive, TLS by rustls on ring with the
//! system's roots.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::digest::{Digests, digest_bytes, hash_file, normalize_sha256};
use crate::error::{Failure, StoreError, chain, one_line};
use crate::transfer::{self, FileBody, Meter, Open, Opened, Origin, encode_path, retry};
use crate::{Object, ObjectInfo, Progress, Tuning};

type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;
type HyperClient = LegacyClient<HttpsConnector<HttpConnector>, ReqBody>;

const SHA256_HEADER: &str = "x-checksum-sha256";
const SHA1_HEADER: &str = "x-checksum-sha1";
/// Largest error body read for a message.
const ERROR_BODY_LIMIT: usize = 8 << 10;

/// An `Authorization` value; `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(HeaderValue);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    pub(crate) fn basic(user: &str, password: &str) -> Result<Secret, String> {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Secret::header(&format!("Basic {token}"))
    }
    pub(crate) fn bearer(token: &str) -> Result<Secret, String> {
        Secret::header(&format!("Bearer {}", token.trim()))
    }
    fn header(value: &str) -> Result<Secret, String> {
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| "the credential holds characters an HTTP header cannot carry".to_owned())?;
        v.set_sensitive(true);
        Ok(Secret(v))
    }
}

/// TLS settings shared by every client: loading the system roots once is enough.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    static CONFIG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            // Unreadable system roots are skipped: plain-http stores need none.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .map_err(|e| format!("TLS setup: {e}"))
        })
        .clone()
}

/// Requests to one server with one set of credentials; `label` names it in errors.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    pub label: String,
    client: HyperClient,
    auth: Option<Secret>,
    /// What to check when the server says 401/403.
    hint: String,
}

impl Http {
    pub(crate) fn new(label: String, auth: Option<Secret>, hint: String) -> Result<Http, String> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(15)));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client =
            LegacyClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        Ok(Http { label, client, auth, hint })
    }

    fn request(&self, method: Method, url: &str) -> hyper::http::request::Builder {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.0.clone());
        }
        builder
    }

    /// Sends a request; transport failures are transient (the caller retries).
    async fn send(&self, request: Request<ReqBody>, key: &str) -> Result<Response<Incoming>, Failure> {
        let method = request.method().to_string();
        let address = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::Transient(StoreError::Unreachable {
                    store: self.label.clone(),
                    address,
                    cause: root_cause(&e),
                })
            } else {
                Failure::Transient(StoreError::Transfer {
                    store: self.label.clone(),
                    operation: method,
                    key: key.to_owned(),
                    detail: chain(&e),
                })
            }
        })
    }

    /// Sends a body-less request and waits for the response head at most `timeout`.
    async fn send_empty(
        &self,
        method: Method,
        url: &str,
        key: &str,
        headers: &[(hyper::header::HeaderName, String)],
        timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        let mut builder = self.request(method.clone(), url);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder.body(empty()).map_err(|e| self.bad_request(&method, key, e))?;
        match tokio::time::timeout(timeout, self.send(request, key)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transient(StoreError::Transfer {
                store: self.label.clone(),
                operation: method.to_string(),
                key: key.to_owned(),
                detail: format!("no answer within {timeout:?}"),
            })),
        }
    }

    fn bad_request(&self, method: &Method, key: &str, e: hyper::http::Error) -> Failure {
        Failure::Permanent(StoreError::Transfer {
            store: self.label.clone(),
            operation: method.to_string(),
            key: key.to_owned(),
            detail: format!("cannot build the request: {e}"),
        })
    }

    /// The error for a non-success status; consumes (a bounded part of) the body for detail.
    async fn status_failure(&self, method: &Method, key: &str, url: &str, response: Response<Incoming>) -> Failure {
        let status = response.status();
        let code = status.as_u16();
        match status {
            StatusCode::NOT_FOUND => {
                return Failure::Permanent(StoreError::NotFound {
                    store: self.label.clone(),
                    key: key.to_owned(),
                    url: url.to_owned(),
                });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Failure::Permanent(StoreError::Denied {
                    store: self.label.clone(),
                    method: method.to_string(),
                    key: key.to_owned(),
                    status: code,
                    hint: self.hint.clone(),
                });
            }
            _ => {}
        }
        let body = response.into_body();
        let detail = match tokio::time::timeout(
            Duration::from_secs(5),
            http_body_util::Limited::new(body, ERROR_BODY_LIMIT).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => one_line(&strip_tags(&String::from_utf8_lossy(&collected.to_bytes())), 200),
            _ => String::new(),
        };
        let detail = if detail.is_empty() { status.canonical_reason().unwrap_or("").to_owned() } else { detail };
        let error = StoreError::Status {
            store: self.label.clone(),
            method: method.to_string(),
            key: key.to_owned(),
            status: code,
            detail,
        };
        if status.is_server_error() || code == 408 || code == 429 {
            Failure::Transient(error)
        } else {
            Failure::Permanent(error)
        }
    }

    /// `GET url` from `offset`, for the download engine.
    pub(crate) async fn open_download(
        &self,
        url: &str,
        key: &str,
        offset: u64,
        recorded: Option<String>,
        timeout: Duration,
    ) -> Result<Open, Failure> {
        let range = if offset > 0 { vec![(RANGE, format!("bytes={offset}-"))] } else { Vec::new() };
        let response = self.send_empty(Method::GET, url, key, &range, timeout).await?;
        let headers = response.headers().clone();
        let header_sha = header_str(&headers, SHA256_HEADER).and_then(normalize_sha256);
        let (start, total) = match response.status() {
            StatusCode::OK => (0, content_length(&headers)),
            StatusCode::PARTIAL_CONTENT => {
                match headers.get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range) {
                    Some((start, total)) => (start, total),
                    None => {
                        return Err(Failure::Permanent(StoreError::Transfer {
                            store: self.label.clone(),
                            operation: "GET".into(),
                            key: key.to_owned(),
                            detail: "a 206 answer without a usable Content-Range".into(),
                        }));
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Open::RangeNotSatisfiable),
            _ => return Err(self.status_failure(&Method::GET, key, url, response).await),
        };
        let label = self.label.clone();
        let key_owned = key.to_owned();
        let body = BodyStream::new(response.into_body())
            .filter_map(move |frame| {
                let out = match frame {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(e) => Some(Err(Failure::Transient(StoreError::Transfer {
                        store: label.clone(),
                        operation: "GET".into(),
                        key: key_owned.clone(),
                        detail: format!("the connection broke: {}", chain(&e)),
                    }))),
                };
                std::future::ready(out)
            })
            .boxed();
        Ok(Open::Body(Opened { start, total, recorded_sha256: header_sha.or(recorded), body }))
    }
}

fn empty() -> ReqBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(data: Bytes) -> ReqBody {
    Full::new(data).map_err(|never| match never {}).boxed_unsync()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok())
}

/// `bytes START-END/TOTAL` → (START, TOTAL); TOTAL may be `*`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total.trim() == "*" { None } else { Some(total.trim().parse().ok()?) };
    Some((start.trim().parse().ok()?, total))
}

/// Error pages are HTML: keep their text.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The innermost error: "Connection refused (os error 111)" rather than "client error (Connect)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(s) = last.source() {
        last = s;
    }
    one_line(&last.to_string(), 200)
}

/// An `http` store: [`Http`] plus the base URL (with the prefix).
#[derive(Clone, Debug)]
pub(crate) struct HttpStore {
    pub http: Http,
    /// `url/prefix`, no trailing slash.
    pub base: String,
}

fn ok_status(s: StatusCode) -> bool {
    matches!(s, StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT)
}

impl HttpStore {
    pub(crate) fn url_of(&self, key: &str) -> String {
        format!("{}/{}", self.base, encode_path(key))
    }

    fn sidecar(key: &str) -> String {
        format!("{key}.sha256")
    }

    pub(crate) async fn upload(
        &self,
        key: &str,
        file: &std::path::Path,
        progress: &dyn Progress,
        tuning: &Tuning,
    ) -> Result<Object, StoreError> {
        let url = self.url_of(key);
        let size = tokio::fs::metadata(file)
            .await
            .map_err(|e| StoreError::io(format!("reading {}", file.display()), e))?
            .len();
        let (digests, _) = hash_file(file, Some(size), None)
            .await
            .map_err(|e| StoreError::io(format!("reading {}", file.display()), e))?;
        let meter = Meter::new(1);
        let label = &self.http.label;
        let sent = retry(tuning, || async {
            let body = FileBody::open(file, 0, size, meter.clone(), 0)
                .await
                .map_err(|e| Failure::Permanent(StoreError::io(format!("reading {}", file.display()), e)))?;
            let request = self
                .http
                .request(Method::PUT, &url)
                .header(CONTENT_LENGTH, size)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(SHA256_HEADER, digests.sha256_hex())
                .header(SHA1_HEADER, digests.sha1_hex())
                .body(body.boxed_unsync())
                .map_err(|e| self.http.bad_request(&Method::PUT, key, e))?;
            let put = async {
                let response = self.http.send(request, key).await?;
                if ok_status(response.status()) {
                    Ok(())
                } else {
                    Err(self.http.status_failure(&Method::PUT, key, &url, response).await)
                }
            };
            transfer::drive(put, &meter, size, progress, tuning.stall_timeout, || StoreError::Transfer {
                store: label.clone(),
                operation: "PUT".into(),
                key: key.to_owned(),
                detail: format!("no progress for {:?}", tuning.stall_timeout),
            })
            .await
        })
        .await;
        if let Err(e) = sent {
            return Err(transfer::explain_changed_file(label, key, file, size, e).await);
        }
        self.check_stored(key, size, &digests, tuning).await?;
        let file_name = key.rsplit('/').next().unwrap_or(key);
        let sidecar = format!("{}  {file_name}\n", digests.sha256_hex());
        let sums = digest_bytes(sidecar.as_bytes());
        self.put(&Self::sidecar(key), Bytes::from(sidecar), "text/plain", &sums, tuning, false).await?;
        Ok(Object { key: key.to_owned(), size, sha256: digests.sha256_hex(), sha1: digests.sha1_hex(), url })
    }

    /// After a PUT: the server must hold `size` bytes, and the sha256 if it reports one.
    async fn check_stored(&self, key: &str, size: u64, digests: &Digests, tuning: &Tuning) -> Result<(), StoreError> {
        let Some(info) = self.head(key, tuning).await? else {
            return Err(StoreError::Transfer {
                store: self.http.label.clone(),
                operation: "HEAD".into(),
                key: key.to_owned(),
                detail: "the object is missing right after its upload".into(),
            });
        };
        if info.size != size {
            return Err(StoreError::Size {
                store: self.http.label.clone(),
                key: key.to_owned(),
                expected: size,
                actual: info.size,
            });
        }
        if let Some(stored) = info.sha256
            && stored != digests.sha256_hex()
        {
            return Err(StoreError::Checksum {
                store: self.http.label.clone(),
                key: key.to_owned(),
                expected: digests.sha256_hex(),
                source_of_expected: "uploaded",
                actual: stored,
            });
        }
        Ok(())
    }

    /// PUT of bytes in memory, retried; `check` also HEADs the result.
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        digests: &Digests,
        tuning: &Tuning,
        check: bool,
    ) -> Result<(), StoreError> {
        let url = self.url_of(key);
        retry(tuning, || async {
            let request = self
                .http
                .request(Method::PUT, &url)
                .header(CONTENT_LENGTH, data.len())
                .header(CONTENT_TYPE, content_type)
                .header(SHA256_HEADER, digests.sha256_hex())
                .header(SHA1_HEADER, digests.sha1_hex())
                .body(full(data.clone()))
                .map_err(|e| self.http.bad_request(&Method::PUT, key, e))?;
            let response =
                tokio::time::timeout(tuning.stall_timeout, self.http.send(request, key)).await.map_err(|_| {
                    Failure::Transient(StoreError::Transfer {
                        store: self.http.label.clone(),
                        operation: "PUT".into(),
                        key: key.to_owned(),
                        detail: format!("no answer within {:?}", tuning.stall_timeout),
                    })
                })??;
            if ok_status(response.status()) {
                Ok(())
            } else {
                Err(self.http.status_failure(&Method::PUT, key, &url, response).await)
            }
        })
        .await?;
        if check {
            self.check_stored(key, data.len() as u64, digests, tuning).await?;
        }
        Ok(())
    }

    pub(crate) async fn put_bytes(
        &self,
        key: &str,
        data: Vec<u8>,
        content_type: &str,
        tuning: &Tuning,
    ) -> Result<Object, StoreError> {
        let data = Bytes::from(data);
        let hashed = data.clone();
        let digests = tokio::task::spawn_blocking(move || digest_bytes(&hashed))
            .await
            .map_err(|e| StoreError::io("hashing", std::io::Error::other(e.to_string())))?;
        self.put(key, data.clone(), content_type, &digests, tuning, true).await?;
        Ok(Object {
            key: key.to_owned(),
            size: data.len() as u64,
            sha256: digests.sha256_hex(),
            sha1: digests.sha1_hex(),
            url: self.url_of(key),
        })
    }

    pub(crate) async fn get_bytes(&self, key: &str, tuning: &Tuning) -> Result<Option<Vec<u8>>, StoreError> {
        let url = self.url_of(key);
        let got = retry(tuning, || async {
            let response = self.http.send_empty(Method::GET, &url, key, &[], tuning.stall_timeout).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if response.status() != StatusCode::OK {
                return Err(self.http.status_failure(&Method::GET, key, &url, response).await);
            }
            let recorded = header_str(response.headers(), SHA256_HEADER).and_then(normalize_sha256);
            let collected = tokio::time::timeout(tuning.stall_timeout * 4, response.into_body().collect())
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|e| chain(&e)))
                .map_err(|detail| {
                    Failure::Transient(StoreError::Transfer {
                        store: self.http.label.clone(),
                        operation: "GET".into(),
                        key: key.to_owned(),
                        detail,
                    })
                })?;
            Ok(Some((collected.to_bytes(), recorded)))
        })
        .await?;
        let Some((data, recorded)) = got else { return Ok(None) };
        if let Some(recorded) = recorded {
            let actual = digest_bytes(&data).sha256_hex();
            if actual != recorded {
                return Err(StoreError::Checksum {
                    store: self.http.label.clone(),
                    key: key.to_owned(),
                    expected: recorded,
                    source_of_expected: "recorded by the store",
                    actual,
                });
            }
        }
        Ok(Some(data.to_vec()))
    }

    pub(crate) async fn head(&self, key: &str, tuning: &Tuning) -> Result<Option<ObjectInfo>, StoreError> {
        let url = self.url_of(key);
        retry(tuning, || async {
            let response = self.http.send_empty(Method::HEAD, &url, key, &[], tuning.stall_timeout).await?;
            match response.status() {
                StatusCode::NOT_FOUND => Ok(None),
                StatusCode::OK => {
                    let h = response.headers();
                    Ok(Some(ObjectInfo {
                        key: key.to_owned(),
                        size: content_length(h).unwrap_or(0),
                        sha256: header_str(h, SHA256_HEADER).and_then(normalize_sha256),
                        sha1: header_str(h, SHA1_HEADER).map(|s| s.trim().to_ascii_lowercase()),
                        etag: header_str(h, ETAG.as_str()).map(str::to_owned),
                        url: url.clone(),
                    }))
                }
                _ => Err(self.http.status_failure(&Method::HEAD, key, &url, response).await),
            }
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str, tuning: &Tuning) -> Result<(), StoreError> {
        for k in [key.to_owned(), Self::sidecar(key)] {
            let url = self.url_of(&k);
            retry(tuning, || async {
                let response = self.http.send_empty(Method::DELETE, &url, &k, &[], tuning.stall_timeout).await?;
                let s = response.status();
                if ok_status(s) || s == StatusCode::NOT_FOUND || s == StatusCode::ACCEPTED {
                    Ok(())
                } else {
                    Err(self.http.status_failure(&Method::DELETE, &k, &url, response).await)
                }
            })
            .await?;
        }
        Ok(())
    }

    /// The sha256 in the `KEY.sha256` sidecar, if there is one.
    async fn sidecar_sha256(&self, key: &str, tuning: &Tuning) -> Result<Option<String>, StoreError> {
        let text = self.get_bytes(&Self::sidecar(key), tuning).await?;
        Ok(text.and_then(|t| String::from_utf8_lossy(&t).split_whitespace().next().and_then(normalize_sha256)))
    }

    pub(crate) async fn download(
        &self,
        key: &str,
        dest: &std::path::Path,
        expected: Option<String>,
        progress: &dyn Progress,
        tuning: &Tuning,
    ) -> Result<Object, StoreError> {
        let url = self.url_of(key);
        let recorded = if expected.is_none() { self.sidecar_sha256(key, tuning).await? } else { None };
        let origin = Origin { store: &self.http.label, key };
        let fetched = transfer::download(origin, dest, expected, tuning, progress, |offset| {
            self.http.open_download(&url, key, offset, recorded.clone(), tuning.stall_timeout)
        })
        .await?;
        Ok(Object {
            key: key.to_owned(),
            size: fetched.size,
            sha256: fetched.digests.sha256_hex(),
            sha1: fetched.digests.sha1_hex(),
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret::basic("ci", "hunter2").expect("header");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert!(Secret::bearer("a\nb").is_err());
    }
}
