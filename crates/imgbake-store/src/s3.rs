//! `type = "s3"`: a bucket and a key prefix, through the AWS SDK (rustls on ring).
//!
//! Every object carries its sha256 as user metadata `imgbake-sha256` (so a download can be
//! verified without being told the checksum), and S3 checks each request's body against an
//! `x-amz-checksum-sha256` we computed ourselves while hashing the file. Files from
//! [`crate::Tuning::multipart_threshold`] on go up in parts, several at once; S3 shows the object
//! only after `CompleteMultipartUpload`, and a failed or abandoned upload is aborted.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length, SdkBody};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hyper::body::{Body, Frame, SizeHint};

use crate::digest::{digest_bytes, hash_file, normalize_sha256};
use crate::error::{Failure, StoreError, chain, one_line};
use crate::transfer::{self, Meter, Open, Opened, Origin, encode_path, join_key};
use crate::{Object, ObjectInfo, Progress, Tuning};

/// User metadata key holding the object's sha256 (hex).
pub(crate) const META_SHA256: &str = "imgbake-sha256";
/// S3's smallest part (except the last).
const MIN_PART: u64 = 5 << 20;
/// S3's largest part count.
const MAX_PARTS: u64 = 10_000;

const DENIED_HINT: &str = "check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role) and the bucket policy";

#[derive(Clone, Debug)]
pub(crate) struct S3Store {
    pub label: String,
    client: aws_sdk_s3::Client,
    pub bucket: String,
    prefix: String,
    region: String,
    endpoint: Option<String>,
}

/// The SDK's HTTP client on rustls/ring (no aws-lc).
fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

impl S3Store {
    /// Loads the AWS environment (credential chain, region, profile) for `store`.
    pub(crate) async fn open(store: &imgbake_config::Store, label: String) -> Result<S3Store, StoreError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
        if let Some(region) = &store.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        S3Store::with_config(store, &sdk, label)
    }

    /// Uses `sdk` (credentials, region, endpoint, HTTP client) with the store's overrides.
    pub(crate) fn with_config(
        store: &imgbake_config::Store,
        sdk: &SdkConfig,
        label: String,
    ) -> Result<S3Store, StoreError> {
        let bucket = store.bucket.as_ref().map(|b| b.get_ref().trim().to_owned()).unwrap_or_default();
        if bucket.is_empty() {
            return Err(StoreError::Config {
                store: store.name.clone(),
                message: "`type = \"s3\"` needs `bucket`".into(),
            });
        }
        let endpoint = store
            .endpoint_url
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
            .map(|e| e.trim_end_matches('/').to_owned());
        let region = match (&store.region, sdk.region(), &endpoint) {
            (Some(r), _, _) => r.clone(),
            (None, Some(r), _) => r.to_string(),
            // MinIO and test servers ignore the region, but SigV4 needs one.
            (None, None, Some(_)) => "us-east-1".to_owned(),
            (None, None, None) => {
                return Err(StoreError::Config {
                    store: store.name.clone(),
                    message: "no AWS region: set `region` in the store or AWS_REGION".into(),
                });
            }
        };
        let mut config = aws_sdk_s3::config::Builder::from(sdk)
            .region(Region::new(region.clone()))
            // We send our own sha256 per request and verify downloads ourselves: no second
            // hashing pass by the SDK (and no CRC32 default it would otherwise add).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(5));
        if let Some(endpoint) = &endpoint {
            // Other endpoints (MinIO, moto) rarely have per-bucket DNS names.
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(S3Store {
            label,
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket,
            prefix: store.prefix.clone().unwrap_or_default().trim_matches('/').to_owned(),
            region,
            endpoint,
        })
    }

    pub(crate) fn location(&self) -> String {
        let mut s = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        if let Some(e) = &self.endpoint {
            s.push_str(&format!(", endpoint {e}"));
        }
        s
    }

    fn full_key(&self, key: &str) -> String {
        join_key(&self.prefix, key)
    }

    pub(crate) fn url_of(&self, key: &str) -> String {
        let path = encode_path(&self.full_key(key));
        match &self.endpoint {
            Some(e) => format!("{e}/{}/{path}", self.bucket),
            None => format!("https://{}.s3.{}.amazonaws.com/{path}", self.bucket, self.region),
        }
    }

    /// Maps an SDK error; the SDK already retried transient ones, the download engine may again.
    fn failure<E>(&self, operation: &str, key: &str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let text = chain(&e);
        let transfer = |detail: String| StoreError::Transfer {
            store: self.label.clone(),
            operation: operation.to_owned(),
            key: key.to_owned(),
            detail,
        };
        // The credential chain's failure surfaces as a dispatch or construction failure.
        if !matches!(e, SdkError::ServiceError(_)) && (text.contains("credential") || text.contains("identity")) {
            let mut cause: &(dyn std::error::Error + 'static) = &e;
            while let Some(s) = cause.source() {
                cause = s;
            }
            return Failure::Permanent(StoreError::Config {
                store: self.label_name(),
                message: format!("no usable AWS credentials ({}): {DENIED_HINT}", one_line(&cause.to_string(), 200)),
            });
        }
        match &e {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("").to_owned();
                let message = service.err().message().unwrap_or("").to_owned();
                if code == "NoSuchBucket" {
                    return Failure::Permanent(StoreError::Config {
                        store: self.label_name(),
                        message: format!("bucket `{}` does not exist (NoSuchBucket)", self.bucket),
                    });
                }
                match status {
                    Some(404) => Failure::Permanent(StoreError::NotFound {
                        store: self.label.clone(),
                        key: key.to_owned(),
                        url: self.url_of(key),
                    }),
                    Some(s @ (401 | 403)) => Failure::Permanent(StoreError::Denied {
                        store: self.label.clone(),
                        method: operation.to_owned(),
                        key: key.to_owned(),
                        status: s,
                        hint: DENIED_HINT.into(),
                    }),
                    Some(s) => {
                        let error = StoreError::Status {
                            store: self.label.clone(),
                            method: operation.to_owned(),
                            key: key.to_owned(),
                            status: s,
                            detail: one_line(&format!("{code}: {message}"), 200),
                        };
                        if s >= 500 || s == 408 || s == 429 || code == "SlowDown" {
                            Failure::Transient(error)
                        } else {
                            Failure::Permanent(error)
                        }
                    }
                    None => Failure::Permanent(transfer(text)),
                }
            }
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
                Failure::Transient(StoreError::Unreachable {
                    store: self.label.clone(),
                    address: self.endpoint.clone().unwrap_or_else(|| format!("s3.{}.amazonaws.com", self.region)),
                    cause: text,
                })
            }
            SdkError::ConstructionFailure(_) => Failure::Permanent(transfer(text)),
            _ => Failure::Transient(transfer(text)),
        }
    }

    /// The store's name, for `StoreError::Config` ("s3 store `x`" → "x").
    fn label_name(&self) -> String {
        self.label.split('`').nth(1).unwrap_or(&self.label).to_owned()
    }

    pub(crate) async fn upload(
        &self,
        key: &str,
        file: &Path,
        progress: &dyn Progress,
        tuning: &Tuning,
    ) -> Result<Object, StoreError> {
        let full = self.full_key(key);
        let size = tokio::fs::metadata(file)
            .await
            .map_err(|e| StoreError::io(format!("reading {}", file.display()), e))?
            .len();
        let multipart = size >= tuning.multipart_threshold && size > MIN_PART;
        let part_size = tuning.part_size.max(MIN_PART).max(size.div_ceil(MAX_PARTS));
        let (digests, _) = hash_file(file, Some(size), multipart.then_some(part_size))
            .await
            .map_err(|e| StoreError::io(format!("reading {}", file.display()), e))?;
        let sha256 = digests.sha256_hex();
        let sent: Result<(), StoreError> = async {
            if multipart {
                self.upload_parts(key, &full, file, size, part_size, &digests.parts, &sha256, progress, tuning).await?;
            } else {
                let meter = Meter::new(1);
                let body = file_stream(file, 0, size, &meter, 0).await?;
                let put = async {
                    self.client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(&full)
                        .body(body)
                        .content_length(size as i64)
                        .content_type("application/octet-stream")
                        .metadata(META_SHA256, &sha256)
                        .checksum_sha256(digests.sha256_base64())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| self.failure("PutObject", key, e))
                };
                transfer::drive(put, &meter, size, progress, tuning.stall_timeout, || {
                    self.stalled("PutObject", key, tuning)
                })
                .await
                .map_err(Failure::into_error)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            return Err(transfer::explain_changed_file(&self.label, key, file, size, e).await);
        }
        self.check_stored(key, size, &sha256).await?;
        Ok(Object { key: key.to_owned(), size, sha256, sha1: digests.sha1_hex(), url: self.url_of(key) })
    }

    fn stalled(&self, operation: &str, key: &str, tuning: &Tuning) -> StoreError {
        StoreError::Transfer {
            store: self.label.clone(),
            operation: operation.to_owned(),
            key: key.to_owned(),
            detail: format!("no progress for {:?}", tuning.stall_timeout),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        file: &Path,
        size: u64,
        part_size: u64,
        part_sums: &[[u8; 32]],
        sha256: &str,
        progress: &dyn Progress,
        tuning: &Tuning,
    ) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .content_type("application/octet-stream")
            .metadata(META_SHA256, sha256)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|e| self.failure("CreateMultipartUpload", key, e).into_error())?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(StoreError::Transfer {
                store: self.label.clone(),
                operation: "CreateMultipartUpload".into(),
                key: key.to_owned(),
                detail: "no upload id in the answer".into(),
            });
        };
        // From here on every way out, a dropped future included, aborts the upload.
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full.to_owned(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let count = size.div_ceil(part_size) as usize;
        let meter = Meter::new(count);
        let upload_id_ref = upload_id.as_str();
        let meter_ref = &meter;
        let parts = futures::stream::iter(0..count)
            .map(|i| async move {
                let offset = i as u64 * part_size;
                let len = part_size.min(size - offset);
                let number = i as i32 + 1;
                let sum = part_sums.get(i).map(|s| base64::engine::general_purpose::STANDARD.encode(s));
                let body = file_stream(file, offset, len, meter_ref, i).await.map_err(|e| {
                    Failure::Permanent(StoreError::Transfer {
                        store: self.label.clone(),
                        operation: format!("UploadPart {number}"),
                        key: key.to_owned(),
                        detail: format!("{e} (did the file change during the upload?)"),
                    })
                })?;
                let answer = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(upload_id_ref)
                    .part_number(number)
                    .body(body)
                    .content_length(len as i64)
                    .set_checksum_sha256(sum.clone())
                    .send()
                    .await
                    .map_err(|e| self.failure(&format!("UploadPart {number}"), key, e))?;
                Ok::<_, Failure>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(answer.e_tag().map(str::to_owned))
                        .set_checksum_sha256(answer.checksum_sha256().map(str::to_owned).or(sum))
                        .build(),
                )
            })
            .buffer_unordered(tuning.concurrency.max(1))
            .try_collect::<Vec<CompletedPart>>();
        let uploaded = transfer::drive(parts, &meter, size, progress, tuning.stall_timeout, || {
            self.stalled("UploadPart", key, tuning)
        })
        .await;
        let mut parts = match uploaded {
            Ok(parts) => parts,
            Err(f) => {
                guard.abort().await;
                return Err(f.into_error());
            }
        };
        parts.sort_by_key(|p| p.part_number());
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        match completed {
            Ok(_) => {
                guard.armed = false;
                Ok(())
            }
            Err(e) => {
                guard.abort().await;
                Err(self.failure("CompleteMultipartUpload", key, e).into_error())
            }
        }
    }

    /// After an upload: the object must be there with our size and sha256.
    async fn check_stored(&self, key: &str, size: u64, sha256: &str) -> Result<(), StoreError> {
        let Some(info) = self.head(key).await? else {
            return Err(StoreError::Transfer {
                store: self.label.clone(),
                operation: "HeadObject".into(),
                key: key.to_owned(),
                detail: "the object is missing right after its upload".into(),
            });
        };
        if info.size != size {
            return Err(StoreError::Size {
                store: self.label.clone(),
                key: key.to_owned(),
                expected: size,
                actual: info.size,
            });
        }
        if info.sha256.as_deref() != Some(sha256) {
            return Err(StoreError::Checksum {
                store: self.label.clone(),
                key: key.to_owned(),
                expected: sha256.to_owned(),
                source_of_expected: "uploaded",
                actual: info.sha256.unwrap_or_else(|| "nothing (no imgbake-sha256 metadata)".into()),
            });
        }
        Ok(())
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self.client.head_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                sha256: recorded_sha256(out.metadata()),
                sha1: None,
                etag: out.e_tag().map(str::to_owned),
                url: self.url_of(key),
            })),
            Err(e) => match self.failure("HeadObject", key, e) {
                Failure::Permanent(StoreError::NotFound { .. }) => Ok(None),
                f => Err(f.into_error()),
            },
        }
    }

    pub(crate) async fn put_bytes(&self, key: &str, data: Vec<u8>, content_type: &str) -> Result<Object, StoreError> {
        let data = Bytes::from(data);
        let hashed = data.clone();
        let digests = tokio::task::spawn_blocking(move || digest_bytes(&hashed))
            .await
            .map_err(|e| StoreError::io("hashing", std::io::Error::other(e.to_string())))?;
        let size = data.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(data))
            .content_length(size as i64)
            .content_type(content_type)
            .metadata(META_SHA256, digests.sha256_hex())
            .checksum_sha256(digests.sha256_base64())
            .send()
            .await
            .map_err(|e| self.failure("PutObject", key, e).into_error())?;
        Ok(Object {
            key: key.to_owned(),
            size,
            sha256: digests.sha256_hex(),
            sha1: digests.sha1_hex(),
            url: self.url_of(key),
        })
    }

    pub(crate) async fn get_bytes(&self, key: &str, tuning: &Tuning) -> Result<Option<Vec<u8>>, StoreError> {
        let got = transfer::retry(tuning, || async {
            let out = match self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
                Ok(out) => out,
                Err(e) => {
                    return match self.failure("GetObject", key, e) {
                        Failure::Permanent(StoreError::NotFound { .. }) => Ok(None),
                        f => Err(f),
                    };
                }
            };
            let recorded = recorded_sha256(out.metadata());
            let data = out.body.collect().await.map_err(|e| {
                Failure::Transient(StoreError::Transfer {
                    store: self.label.clone(),
                    operation: "GetObject".into(),
                    key: key.to_owned(),
                    detail: chain(&e),
                })
            })?;
            Ok(Some((data.into_bytes(), recorded)))
        })
        .await?;
        let Some((data, recorded)) = got else { return Ok(None) };
        if let Some(recorded) = recorded {
            let actual = digest_bytes(&data).sha256_hex();
            if actual != recorded {
                return Err(StoreError::Checksum {
                    store: self.label.clone(),
                    key: key.to_owned(),
                    expected: recorded,
                    source_of_expected: "recorded by the store",
                    actual,
                });
            }
        }
        Ok(Some(data.to_vec()))
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.client.delete_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(_) => Ok(()),
            Err(e) => match self.failure("DeleteObject", key, e) {
                Failure::Permanent(StoreError::NotFound { .. }) => Ok(()),
                f => Err(f.into_error()),
            },
        }
    }

    async fn open_download(&self, key: &str, offset: u64) -> Result<Open, Failure> {
        let mut get = self.client.get_object().bucket(&self.bucket).key(self.full_key(key));
        if offset > 0 {
            get = get.range(format!("bytes={offset}-"));
        }
        let out = match get.send().await {
            Ok(out) => out,
            Err(e) => {
                if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) {
                    return Ok(Open::RangeNotSatisfiable);
                }
                return Err(self.failure("GetObject", key, e));
            }
        };
        let length = out.content_length().map(|l| l.max(0) as u64);
        let (start, total) = match out.content_range().and_then(parse_content_range) {
            Some((start, total)) => (start, total),
            None => (0, length),
        };
        let recorded = recorded_sha256(out.metadata());
        let label = self.label.clone();
        let key_owned = key.to_owned();
        let body = futures::stream::unfold(out.body, move |mut body| {
            let (label, key) = (label.clone(), key_owned.clone());
            async move {
                let next = body.next().await?;
                let item = next.map_err(|e| {
                    Failure::Transient(StoreError::Transfer {
                        store: label,
                        operation: "GetObject".into(),
                        key,
                        detail: format!("the connection broke: {}", chain(&e)),
                    })
                });
                Some((item, body))
            }
        })
        .boxed();
        Ok(Open::Body(Opened { start, total, recorded_sha256: recorded, body }))
    }

    pub(crate) async fn download(
        &self,
        key: &str,
        dest: &Path,
        expected: Option<String>,
        progress: &dyn Progress,
        tuning: &Tuning,
    ) -> Result<Object, StoreError> {
        let origin = Origin { store: &self.label, key };
        let fetched =
            transfer::download(origin, dest, expected, tuning, progress, |offset| self.open_download(key, offset))
                .await?;
        Ok(Object {
            key: key.to_owned(),
            size: fetched.size,
            sha256: fetched.digests.sha256_hex(),
            sha1: fetched.digests.sha1_hex(),
            url: self.url_of(key),
        })
    }
}

fn recorded_sha256(metadata: Option<&HashMap<String, String>>) -> Option<String> {
    metadata.and_then(|m| m.get(META_SHA256)).and_then(|s| normalize_sha256(s))
}

fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    let total = if total.trim() == "*" { None } else { Some(total.trim().parse().ok()?) };
    Some((start.trim().parse().ok()?, total))
}

/// A retryable file-slice body (the SDK re-opens the file on a retry) counted into `meter`.
async fn file_stream(
    path: &Path,
    offset: u64,
    len: u64,
    meter: &Arc<Meter>,
    slot: usize,
) -> Result<ByteStream, StoreError> {
    let stream = ByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .buffer_size(256 << 10)
        .build()
        .await
        .map_err(|e| StoreError::io(format!("reading {}", path.display()), std::io::Error::other(chain(&e))))?;
    let meter = meter.clone();
    Ok(stream.map(move |body| {
        meter.reset(slot);
        SdkBody::from_body_1_x(Counted { inner: body, meter: meter.clone(), slot })
    }))
}

/// Counts the data frames of a body into a [`Meter`] slot.
struct Counted {
    inner: SdkBody,
    meter: Arc<Meter>,
    slot: usize,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.meter.add(this.slot, data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        Body::size_hint(&self.inner)
    }
}

/// Aborts a multipart upload unless disarmed: explicitly on error paths, from `Drop` when the
/// upload future is dropped (Ctrl-C, a timeout around it).
struct AbortGuard {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    async fn abort(&mut self) {
        self.armed = false;
        // Best effort: the error that led here is what the user needs to see.
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let request =
                self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(&self.upload_id);
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}
