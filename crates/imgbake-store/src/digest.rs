//! Checksums and disk writes off the async workers.
//!
//! Each consumer of a byte stream (the sha256 hasher, the sha1 hasher, the file writer) runs on
//! a blocking thread of its own, fed `Bytes` through a bounded channel: hashing and writing a
//! multi-GiB artifact then run in parallel with the network instead of stalling the runtime,
//! and the channel bounds memory.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks in flight per consumer.
const CHANNEL_DEPTH: usize = 32;
/// Read size for local files.
pub(crate) const READ_CHUNK: usize = 1 << 20;

/// Something a blocking thread feeds bytes into.
pub(crate) trait Sink: Send + 'static {
    type Output: Send + 'static;
    fn write(&mut self, data: &[u8]) -> std::io::Result<()>;
    fn finish(self) -> std::io::Result<Self::Output>;
}

/// A sink running on its own blocking thread.
pub(crate) struct Worker<O> {
    tx: mpsc::Sender<Bytes>,
    join: JoinHandle<std::io::Result<O>>,
}

impl<O: Send + 'static> Worker<O> {
    pub(crate) fn spawn<S: Sink<Output = O>>(mut sink: S) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let join = tokio::task::spawn_blocking(move || {
            while let Some(data) = rx.blocking_recv() {
                sink.write(&data)?;
            }
            sink.finish()
        });
        Worker { tx, join }
    }

    /// Queues `data`; fails only if the worker stopped (its error comes from [`Worker::finish`]).
    pub(crate) async fn send(&self, data: Bytes) -> Result<(), ()> {
        self.tx.send(data).await.map_err(|_| ())
    }

    /// Queues from a blocking thread.
    fn blocking_send(&self, data: Bytes) -> Result<(), ()> {
        self.tx.blocking_send(data).map_err(|_| ())
    }

    /// Waits until everything queued is consumed; the sink's result.
    pub(crate) async fn finish(self) -> std::io::Result<O> {
        drop(self.tx);
        self.join.await.map_err(|e| std::io::Error::other(format!("worker thread failed: {e}")))?
    }
}

struct Sha256Sink(Sha256);
impl Sink for Sha256Sink {
    type Output = [u8; 32];
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.update(data);
        Ok(())
    }
    fn finish(self) -> std::io::Result<[u8; 32]> {
        Ok(self.0.finalize().into())
    }
}

struct Sha1Sink(Sha1);
impl Sink for Sha1Sink {
    type Output = [u8; 20];
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.update(data);
        Ok(())
    }
    fn finish(self) -> std::io::Result<[u8; 20]> {
        Ok(self.0.finalize().into())
    }
}

/// sha256 of each `part_size` slice (S3 multipart part checksums).
struct PartsSink {
    part_size: u64,
    filled: u64,
    current: Sha256,
    done: Vec<[u8; 32]>,
}
impl Sink for PartsSink {
    type Output = Vec<[u8; 32]>;
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let room = (self.part_size - self.filled).min(data.len() as u64) as usize;
            self.current.update(&data[..room]);
            self.filled += room as u64;
            data = &data[room..];
            if self.filled == self.part_size {
                self.done.push(std::mem::take(&mut self.current).finalize().into());
                self.filled = 0;
            }
        }
        Ok(())
    }
    fn finish(mut self) -> std::io::Result<Vec<[u8; 32]>> {
        if self.filled > 0 {
            self.done.push(self.current.finalize().into());
        }
        Ok(self.done)
    }
}

/// Writes to a file from a given offset; returns the file (flushed) and the bytes written.
pub(crate) struct FileSink {
    file: std::fs::File,
    written: u64,
    /// File offset of the first byte whose write-back has not been started.
    unflushed_from: u64,
    offset: u64,
}

/// Start write-back every this many bytes, so that the `fsync` before the final rename finds
/// little left to do instead of flushing the whole file at the end.
const WRITEBACK_EVERY: u64 = 8 << 20;
impl FileSink {
    /// Truncates `file` to `offset` and writes from there.
    pub(crate) fn at(mut file: std::fs::File, offset: u64) -> std::io::Result<FileSink> {
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(FileSink { file, written: 0, unflushed_from: offset, offset })
    }
}
impl Sink for FileSink {
    type Output = u64;
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        let end = self.offset + self.written;
        if end - self.unflushed_from >= WRITEBACK_EVERY {
            use std::os::fd::AsRawFd;
            // Only starts write-back (does not wait); a failure here is harmless, fsync decides.
            // SAFETY: plain syscall on an fd we own.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.unflushed_from as libc::off64_t,
                    (end - self.unflushed_from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.unflushed_from = end;
        }
        Ok(())
    }
    fn finish(mut self) -> std::io::Result<u64> {
        self.file.flush()?;
        Ok(self.written)
    }
}

/// The checksums of one byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Digests {
    pub sha256: [u8; 32],
    pub sha1: [u8; 20],
    /// sha256 per part, when asked for.
    pub parts: Vec<[u8; 32]>,
}

impl Digests {
    pub(crate) fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
    pub(crate) fn sha1_hex(&self) -> String {
        hex::encode(self.sha1)
    }
    pub(crate) fn sha256_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.sha256)
    }
}

/// sha256 + sha1 (+ per-part sha256) of a stream, each on its own thread.
pub(crate) struct Hashers {
    sha256: Worker<[u8; 32]>,
    sha1: Worker<[u8; 20]>,
    parts: Option<Worker<Vec<[u8; 32]>>>,
}

impl Hashers {
    pub(crate) fn new(part_size: Option<u64>) -> Hashers {
        Hashers {
            sha256: Worker::spawn(Sha256Sink(Sha256::new())),
            sha1: Worker::spawn(Sha1Sink(Sha1::new())),
            parts: part_size.map(|part_size| {
                Worker::spawn(PartsSink { part_size, filled: 0, current: Sha256::new(), done: Vec::new() })
            }),
        }
    }

    pub(crate) async fn feed(&self, data: Bytes) -> Result<(), ()> {
        if let Some(parts) = &self.parts {
            parts.send(data.clone()).await?;
        }
        self.sha1.send(data.clone()).await?;
        self.sha256.send(data).await
    }

    fn blocking_feed(&self, data: Bytes) -> Result<(), ()> {
        if let Some(parts) = &self.parts {
            parts.blocking_send(data.clone())?;
        }
        self.sha1.blocking_send(data.clone())?;
        self.sha256.blocking_send(data)
    }

    pub(crate) async fn finish(self) -> std::io::Result<Digests> {
        let parts = match self.parts {
            Some(parts) => parts.finish().await?,
            None => Vec::new(),
        };
        Ok(Digests { sha256: self.sha256.finish().await?, sha1: self.sha1.finish().await?, parts })
    }
}

/// Hashes the first `len` bytes of `path` (the whole file if `None`); also returns its length.
pub(crate) async fn hash_file(
    path: &Path,
    len: Option<u64>,
    part_size: Option<u64>,
) -> std::io::Result<(Digests, u64)> {
    let hashers = Hashers::new(part_size);
    let path: PathBuf = path.to_owned();
    // The reader is a blocking thread too; `hashers` goes there and comes back.
    let (hashers, read) = tokio::task::spawn_blocking(move || {
        let result = read_into(&path, len, &hashers);
        (hashers, result)
    })
    .await
    .map_err(|e| std::io::Error::other(format!("reader thread failed: {e}")))?;
    let finished = hashers.finish().await;
    let read = read?;
    Ok((finished?, read))
}

/// Feeds the first `len` bytes of `path` to `hashers` (from a blocking thread).
pub(crate) fn read_prefix_into(path: &Path, len: u64, hashers: &Hashers) -> std::io::Result<u64> {
    read_into(path, Some(len), hashers)
}

fn read_into(path: &Path, len: Option<u64>, hashers: &Hashers) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let mut reader = file.take(len.unwrap_or(u64::MAX));
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut filled = 0;
        // Fill whole chunks: fewer, larger messages to the hashers.
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        total += filled as u64;
        if hashers.blocking_feed(Bytes::from(buf)).is_err() {
            return Err(std::io::Error::other("a hasher thread stopped"));
        }
    }
    if let Some(len) = len
        && total != len
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} holds {total} bytes, expected {len}", path.display()),
        ));
    }
    Ok(total)
}

/// sha256 of bytes in memory (small objects).
pub(crate) fn digest_bytes(data: &[u8]) -> Digests {
    Digests { sha256: Sha256::digest(data).into(), sha1: Sha1::digest(data).into(), parts: Vec::new() }
}

/// Lowercase 64-hex-digit sha256, or `None`.
pub(crate) fn normalize_sha256(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    (t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_hashes_match_one_shot_hashes_and_parts_split_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * READ_CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let (d, len) = hash_file(&path, None, Some(1_000_000)).await.expect("hash");
        assert_eq!(len, data.len() as u64);
        let one = digest_bytes(&data);
        assert_eq!((d.sha256, d.sha1), (one.sha256, one.sha1));
        let expected_parts: Vec<[u8; 32]> = data.chunks(1_000_000).map(|c| Sha256::digest(c).into()).collect();
        assert_eq!(d.parts, expected_parts);
        let (prefix, n) = hash_file(&path, Some(10), None).await.expect("prefix");
        assert_eq!((prefix.sha256, n), (digest_bytes(&data[..10]).sha256, 10));
    }

    #[test]
    fn sha256_normalization() {
        let upper = "AB".repeat(32);
        assert_eq!(normalize_sha256(&format!(" {upper}\n")), Some("ab".repeat(32)));
        assert_eq!(normalize_sha256("abc"), None);
        assert_eq!(normalize_sha256(&"zz".repeat(32)), None);
    }
}
