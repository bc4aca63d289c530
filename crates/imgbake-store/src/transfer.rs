//! What both kinds of store share: progress metering, retries with jittered backoff, object
//! keys, and the download engine (`.partial` file, resume, verification, rename into place).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;

use crate::digest::{Digests, FileSink, Hashers, Worker};
use crate::error::{Failure, StoreError};
use crate::{Progress, Tuning};

/// How often progress is reported at most.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Bytes moved so far, per slot (one slot per multipart part), so that a retried part restarts
/// its own count instead of counting twice.
#[derive(Debug)]
pub(crate) struct Meter {
    slots: Vec<AtomicU64>,
}

impl Meter {
    pub(crate) fn new(slots: usize) -> Arc<Meter> {
        Arc::new(Meter { slots: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect() })
    }
    pub(crate) fn reset(&self, slot: usize) {
        self.slots[slot].store(0, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, slot: usize, n: u64) {
        self.slots[slot].fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// Runs an upload future while reporting `meter` to `progress` (at most 4 times a second) and
/// failing it when no byte moved for `stall` while bytes remain. Once the whole body is sent
/// the server may take long to answer (it hashes or assembles the object): no stall check then.
pub(crate) async fn drive<T>(
    fut: impl Future<Output = Result<T, Failure>>,
    meter: &Meter,
    total: u64,
    progress: &dyn Progress,
    stall: Duration,
    stalled: impl Fn() -> StoreError,
) -> Result<T, Failure> {
    let mut fut = std::pin::pin!(fut);
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        tokio::select! {
            result = &mut fut => {
                progress.transferred(meter.total().min(total), Some(total));
                return result;
            }
            _ = tick.tick() => {
                let done = meter.total().min(total);
                if done != last {
                    last = done;
                    last_change = Instant::now();
                    progress.transferred(done, Some(total));
                } else if done < total && last_change.elapsed() > stall {
                    return Err(Failure::Transient(stalled()));
                }
            }
        }
    }
}

/// Counts attempts and sleeps between them: 200 ms doubling up to 10 s, each delay drawn
/// between half and all of that (jitter, so that many agents do not retry in lockstep).
pub(crate) struct Backoff {
    attempt: u32,
    attempts: u32,
}

impl Backoff {
    pub(crate) fn new(tuning: &Tuning) -> Backoff {
        Backoff { attempt: 1, attempts: tuning.attempts.max(1) }
    }

    /// Sleeps before the next attempt; `false` (at once) when none is left.
    pub(crate) async fn pause(&mut self) -> bool {
        if self.attempt >= self.attempts {
            return false;
        }
        let base =
            Duration::from_millis(200).saturating_mul(1 << (self.attempt - 1).min(10)).min(Duration::from_secs(10));
        self.attempt += 1;
        tokio::time::sleep(jitter(base)).await;
        true
    }
}

/// A random duration in `[d/2, d]` (std's per-instance random hash keys: no RNG dependency).
fn jitter(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let frac = (h.finish() % 1000) as u32;
    d / 2 + (d / 2) * frac / 1000
}

/// Runs `op` until it succeeds, fails permanently, or the attempts run out.
pub(crate) async fn retry<T, F, Fut>(tuning: &Tuning, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut backoff = Backoff::new(tuning);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(Failure::Permanent(e)) => return Err(e),
            Err(Failure::Transient(e)) => {
                if !backoff.pause().await {
                    return Err(e);
                }
            }
        }
    }
}

/// An upload failed: if the file's size changed since it was hashed, that is the story to tell.
pub(crate) async fn explain_changed_file(store: &str, key: &str, file: &Path, size: u64, e: StoreError) -> StoreError {
    match tokio::fs::metadata(file).await {
        Ok(now) if now.len() != size => StoreError::Transfer {
            store: store.to_owned(),
            operation: "upload".into(),
            key: key.to_owned(),
            detail: format!(
                "{} changed during the upload ({size} bytes when hashed, {} now); nothing was published",
                file.display(),
                now.len()
            ),
        },
        _ => e,
    }
}

/// Refuses keys that could escape the prefix or name a directory.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| Err(StoreError::InvalidKey { key: key.to_owned(), reason });
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("it starts or ends with `/`");
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("it has an empty, `.` or `..` path segment");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return bad("it holds a control character or `\\`");
    }
    Ok(())
}

/// `prefix/key`, the prefix without surrounding slashes.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}/{key}") }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A file slice as a request body with an exact length (so it is sent with `Content-Length`),
/// read in 256 KiB chunks and counted into a [`Meter`] slot.
pub(crate) struct FileBody {
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    remaining: u64,
    meter: Arc<Meter>,
    slot: usize,
}

impl FileBody {
    pub(crate) async fn open(
        path: &Path,
        offset: u64,
        len: u64,
        meter: Arc<Meter>,
        slot: usize,
    ) -> std::io::Result<FileBody> {
        let mut file = tokio::fs::File::open(path).await?;
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        meter.reset(slot);
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10).boxed();
        Ok(FileBody { stream, remaining: len, meter, slot })
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.stream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                self.remaining = self.remaining.saturating_sub(n);
                self.meter.add(self.slot, n);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            // The file shrank while being sent: fail rather than send a short body.
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ended {} bytes early (changed while uploading?)", self.remaining),
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A response body being downloaded, from byte `start` of the object.
pub(crate) struct Opened {
    pub start: u64,
    /// The whole object's size, when the server says.
    pub total: Option<u64>,
    /// The sha256 the store recorded for the object (Artifactory header, S3 metadata).
    pub recorded_sha256: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, Failure>>,
}

/// What opening a download from an offset gave.
pub(crate) enum Open {
    Body(Opened),
    /// 416: the offset is at or past the end (a stale `.partial` of a bigger object).
    RangeNotSatisfiable,
}

/// Size of the blocks handed to the writer and hasher threads.
const COALESCE: usize = 1 << 20;

/// Hands `block` to the file writer and the hashers; `false` if one of them stopped.
async fn push(writer: &Worker<u64>, hashers: &Hashers, block: Bytes) -> bool {
    writer.send(block.clone()).await.is_ok() && hashers.feed(block).await.is_ok()
}

/// Where a download comes from, for messages.
pub(crate) struct Origin<'a> {
    pub store: &'a str,
    pub key: &'a str,
}

/// A finished, verified download.
pub(crate) struct Fetched {
    pub size: u64,
    pub digests: Digests,
}

/// `dest` with `.partial` appended to its file name.
pub(crate) fn partial_path(dest: &Path) -> Result<PathBuf, StoreError> {
    let name = dest.file_name().ok_or_else(|| {
        StoreError::io(
            format!("downloading to {}", dest.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "the destination has no file name"),
        )
    })?;
    let mut partial = name.to_owned();
    partial.push(".partial");
    Ok(dest.with_file_name(partial))
}

/// Opens (creating) `path` and takes an exclusive `flock` on it, so that two processes
/// downloading to the same place take turns instead of interleaving bytes. The lock is on the
/// inode: if the file was renamed or removed while we waited, lock the new one instead.
/// Returns the file and its current length.
async fn lock_partial(path: &Path) -> Result<(std::fs::File, u64), StoreError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let owned = path.to_owned();
    let locked = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64)> {
        loop {
            let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&owned)?;
            // SAFETY: plain syscall on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let held = file.metadata()?;
            match std::fs::metadata(&owned) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok((file, held.len())),
                _ => continue,
            }
        }
    })
    .await
    .map_err(|e| StoreError::io(format!("locking {}", path.display()), std::io::Error::other(e.to_string())))?;
    locked.map_err(|e| StoreError::io(format!("locking {}", path.display()), e))
}

async fn blocking<T: Send + 'static>(
    context: impl FnOnce() -> String,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::io(context(), e)),
        Err(e) => Err(StoreError::io(context(), std::io::Error::other(e.to_string()))),
    }
}

async fn remove_quietly(path: &Path) {
    let _ = tokio::fs::remove_file(path).await;
}

/// Downloads through `open` (called with the offset to start from) into `dest`:
///
/// - bytes go to `DEST.partial` (locked), hashed on the way; an existing `.partial` is resumed
///   (its bytes are hashed first), unless the server ignores the range (200) or refuses it (416);
/// - transient failures are retried with backoff, resuming where the file ends;
/// - the size is checked against the server's, the sha256 against `expected` or else the one
///   the store recorded; a mismatch removes the partial file (after one clean re-download when
///   resumed bytes were involved, as they may stem from an older object);
/// - only a verified file is synced and renamed to `dest`.
pub(crate) async fn download<F, Fut>(
    origin: Origin<'_>,
    dest: &Path,
    expected: Option<String>,
    tuning: &Tuning,
    progress: &dyn Progress,
    mut open: F,
) -> Result<Fetched, StoreError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<Open, Failure>>,
{
    let partial = partial_path(dest)?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))?;
    }
    let (lock, mut have) = lock_partial(&partial).await?;
    let partial_ctx = || format!("writing {}", partial.display());
    let mut hashers: Option<Hashers> = None;
    let mut hashed = 0u64;
    let mut resumed = false;
    let mut clean_retry_done = false;
    let mut backoff = Backoff::new(tuning);
    let mut last_report = Instant::now();

    loop {
        // One pass until the end of the object.
        let (total, recorded) = loop {
            let opened = match open(have).await {
                Ok(Open::Body(o)) => o,
                Ok(Open::RangeNotSatisfiable) if have > 0 => {
                    have = 0;
                    continue;
                }
                Ok(Open::RangeNotSatisfiable) => {
                    remove_quietly(&partial).await;
                    return Err(StoreError::Transfer {
                        store: origin.store.to_owned(),
                        operation: "GET".into(),
                        key: origin.key.to_owned(),
                        detail: "the server refused a download from byte 0 (416)".into(),
                    });
                }
                Err(Failure::Permanent(e)) => {
                    remove_quietly(&partial).await;
                    return Err(e);
                }
                Err(Failure::Transient(e)) => {
                    if !backoff.pause().await {
                        return Err(e);
                    }
                    continue;
                }
            };
            if opened.start > have {
                remove_quietly(&partial).await;
                return Err(StoreError::Transfer {
                    store: origin.store.to_owned(),
                    operation: "GET".into(),
                    key: origin.key.to_owned(),
                    detail: format!("asked for the bytes from {have}, the server sent them from {}", opened.start),
                });
            }
            // A 200 to a range request restarts from 0.
            have = opened.start;
            if hashers.is_none() || hashed != have {
                let fresh = Hashers::new(None);
                let fresh = if have > 0 {
                    resumed = true;
                    let path = partial.clone();
                    let len = have;
                    let (fresh, read) = tokio::task::spawn_blocking(move || {
                        let r = crate::digest::read_prefix_into(&path, len, &fresh);
                        (fresh, r)
                    })
                    .await
                    .map_err(|e| StoreError::io(partial_ctx(), std::io::Error::other(e.to_string())))?;
                    read.map_err(|e| StoreError::io(format!("reading {}", partial.display()), e))?;
                    fresh
                } else {
                    fresh
                };
                hashers = Some(fresh);
            }
            let Some(hash) = hashers.as_ref() else { unreachable!("hashers set above") };
            let file = lock.try_clone().map_err(|e| StoreError::io(partial_ctx(), e))?;
            let start = have;
            let sink = blocking(partial_ctx, move || FileSink::at(file, start)).await?;
            let writer = Worker::spawn(sink);
            let mut body = opened.body;
            let mut fed = 0u64;
            // Network chunks are small (16-64 KiB): handing the workers 1 MiB blocks saves
            // most of the thread wake-ups for one extra copy.
            let mut pending = BytesMut::with_capacity(COALESCE);
            let mut workers_ok = true;
            let outcome: Result<(), Failure> = loop {
                match tokio::time::timeout(tuning.stall_timeout, body.next()).await {
                    Err(_) => {
                        break Err(Failure::Transient(StoreError::Transfer {
                            store: origin.store.to_owned(),
                            operation: "GET".into(),
                            key: origin.key.to_owned(),
                            detail: format!("no data for {:?}", tuning.stall_timeout),
                        }));
                    }
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(f))) => break Err(f),
                    Ok(Some(Ok(chunk))) => {
                        let block = if pending.is_empty() && chunk.len() >= COALESCE {
                            Some(chunk)
                        } else {
                            pending.extend_from_slice(&chunk);
                            (pending.len() >= COALESCE)
                                .then(|| std::mem::replace(&mut pending, BytesMut::with_capacity(COALESCE)).freeze())
                        };
                        if let Some(block) = block {
                            let n = block.len() as u64;
                            if !push(&writer, hash, block).await {
                                // The writer's own error comes from finish() below.
                                workers_ok = false;
                                break Ok(());
                            }
                            fed += n;
                        }
                        if last_report.elapsed() >= REPORT_EVERY {
                            last_report = Instant::now();
                            progress.transferred(start + fed + pending.len() as u64, opened.total);
                        }
                    }
                }
            };
            // Bytes received before a failure are good: keep them for the resume.
            if workers_ok && !pending.is_empty() {
                let n = pending.len() as u64;
                if push(&writer, hash, pending.freeze()).await {
                    fed += n;
                }
            }
            drop(body);
            let written = match writer.finish().await {
                Ok(n) => n,
                Err(e) => {
                    remove_quietly(&partial).await;
                    return Err(StoreError::io(partial_ctx(), e));
                }
            };
            if written != fed {
                remove_quietly(&partial).await;
                return Err(StoreError::io(partial_ctx(), std::io::Error::other("a hasher thread stopped")));
            }
            have = start + written;
            hashed = have;
            match outcome {
                Ok(()) => match opened.total {
                    Some(t) if t != have => {
                        let e = StoreError::Transfer {
                            store: origin.store.to_owned(),
                            operation: "GET".into(),
                            key: origin.key.to_owned(),
                            detail: format!("the body ended at byte {have} of {t}"),
                        };
                        if have > t {
                            remove_quietly(&partial).await;
                            return Err(e);
                        }
                        if !backoff.pause().await {
                            return Err(e);
                        }
                    }
                    _ => break (have, opened.recorded_sha256),
                },
                Err(Failure::Transient(e)) => {
                    if !backoff.pause().await {
                        // The partial file stays: the next download resumes it.
                        return Err(e);
                    }
                }
                Err(Failure::Permanent(e)) => {
                    remove_quietly(&partial).await;
                    return Err(e);
                }
            }
        };
        progress.transferred(total, Some(total));
        let Some(hash) = hashers.take() else { unreachable!("a finished pass has hashers") };
        let digests = match hash.finish().await {
            Ok(d) => d,
            Err(e) => {
                remove_quietly(&partial).await;
                return Err(StoreError::io(format!("hashing {}", partial.display()), e));
            }
        };
        let (want, source_of_expected) = match (&expected, recorded) {
            (Some(e), _) => (Some(e.clone()), "asked for"),
            (None, Some(r)) => (Some(r), "recorded by the store"),
            (None, None) => (None, ""),
        };
        let actual = digests.sha256_hex();
        if let Some(want) = want
            && want != actual
        {
            if resumed && !clean_retry_done {
                // The resumed bytes may belong to an older object under the same key.
                clean_retry_done = true;
                resumed = false;
                have = 0;
                hashed = 0;
                continue;
            }
            remove_quietly(&partial).await;
            return Err(StoreError::Checksum {
                store: origin.store.to_owned(),
                key: origin.key.to_owned(),
                expected: want,
                source_of_expected,
                actual,
            });
        }
        let (from, to) = (partial.clone(), dest.to_owned());
        blocking(
            || format!("moving {} to {}", partial.display(), dest.display()),
            move || {
                lock.sync_data()?;
                std::fs::rename(&from, &to)?;
                drop(lock);
                Ok(())
            },
        )
        .await?;
        return Ok(Fetched { size: total, digests });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("base/1.0/box.box").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\\b", "a\nb"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(join_key("/images/", "a/b"), "images/a/b");
        assert_eq!(join_key("", "a"), "a");
        assert_eq!(encode_path("a b/c+d~é"), "a%20b/c%2Bd~%C3%A9");
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(400));
            assert!(j >= Duration::from_millis(200) && j <= Duration::from_millis(400), "{j:?}");
        }
    }
}
