//! A raw disk image straight into an EBS snapshot with the EBS direct APIs (StartSnapshot,
//! PutSnapshotBlock, CompleteSnapshot): an AMI without a build machine, an S3 bucket or an
//! import-snapshot task (issue 15).
//!
//! - The block size is the one StartSnapshot answers (AWS: 524288 bytes; moto: 512), never assumed.
//! - Only blocks holding data are sent: holes are skipped with `lseek(SEEK_DATA/SEEK_HOLE)` without
//!   reading them, and blocks that read as all zeroes are skipped too (a new snapshot reads zeroes
//!   wherever nothing was written).
//! - The file is read once, in order, by one blocking reader; up to [`UploadOptions::workers`]
//!   PutSnapshotBlock calls are in flight, and the reader stays only a few blocks ahead of them, so
//!   memory stays about `workers × block size` whatever the disk's size.
//! - Every block carries its SHA256; CompleteSnapshot carries the block count and the LINEAR
//!   aggregate checksum, so AWS refuses a snapshot that is not exactly what was read.
//! - Throttling and 5xx answers are retried by the SDK (the [`Clients`]' retry configuration); a
//!   block that still fails fails the upload, naming the block.
//!
//! Why not the `coldsnap` crate (awslabs), which does the same: coldsnap 0.12 turns on the
//! `default-https-client` feature of aws-config, aws-sdk-ebs and aws-sdk-ec2, which brings aws-lc-rs,
//! and imgbake's TLS is rustls on ring only (deny.toml bans aws-lc); its reads are also one seek per
//! block in any order, without skipping holes (see the `ebs_upload` benchmark for the comparison).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Status, Tag};
use aws_sdk_ec2::types::SnapshotState;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::wait::{self, Poll, WaitError};
use ring::digest::{Context, SHA256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clients::Clients;
use crate::error::SdkResultExt;

/// EBS volume sizes are whole GiB.
const GIB: u64 = 1 << 30;
/// The largest EBS volume (io2 Block Express, gp3: 64 TiB).
const MAX_VOLUME_GIB: u64 = 65_536;
/// How often a long upload reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// The reader reads this much at a time (whole blocks; at least one).
const READ_CHUNK: u64 = 1 << 20;
/// Blocks the reader may have ready beyond those in flight.
const QUEUED_BLOCKS: usize = 4;

/// How to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOptions {
    /// The snapshot's description.
    pub description: String,
    /// Tags given to the snapshot at StartSnapshot.
    pub tags: Vec<(String, String)>,
    /// Encrypt the snapshot (with `kms_key_arn`, else the account's default EBS key).
    pub encrypted: bool,
    /// The KMS key to encrypt with (implies `encrypted`).
    pub kms_key_arn: Option<String>,
    /// PutSnapshotBlock calls in flight at most. Default 64.
    pub workers: usize,
    /// StartSnapshot's `Timeout`: minutes after which AWS gives up on a snapshot that was not
    /// completed (it ends in `error`). AWS accepts 10 to 4320; values outside are clamped. Default 60.
    pub timeout_minutes: i32,
    /// StartSnapshot's idempotency token (the SDK makes one when `None`).
    pub client_token: Option<String>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            description: String::new(),
            tags: Vec::new(),
            encrypted: false,
            kms_key_arn: None,
            workers: 64,
            timeout_minutes: 60,
            client_token: None,
        }
    }
}

/// What an upload made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The new snapshot (completed by CompleteSnapshot; [`wait_completed`] waits until EC2 says so).
    pub snapshot_id: String,
    /// Its volume size: the disk's size rounded up to whole GiB.
    pub volume_size_gib: i64,
    /// The block size StartSnapshot answered.
    pub block_size: u32,
    /// Blocks sent (those with data).
    pub blocks_written: u64,
    /// Bytes sent (`blocks_written × block_size`).
    pub bytes_written: u64,
    /// How long the upload took, StartSnapshot to CompleteSnapshot.
    pub elapsed: Duration,
}

/// Upload `raw_disk` (a raw disk image, sparse or not, or a block device) into a new EBS snapshot.
///
/// `started` is called with the snapshot id the moment StartSnapshot answers (the caller journals
/// it, so a failure or interrupt deletes it); an error from it stops the upload with that error.
pub async fn upload(
    clients: &Clients,
    raw_disk: &Path,
    opts: &UploadOptions,
    started: &(dyn Fn(&str) -> Result<(), BuildError> + Send + Sync),
    events: &EventSink,
) -> Result<Uploaded, BuildError> {
    let began = Instant::now();
    let region = clients.region();
    let shown = raw_disk.display().to_string();
    let local = |what: String, e: io::Error| BuildError::new(ErrorKind::Local, format!("{what}: {e}")).caused_by(e);
    let file = File::open(raw_disk).map_err(|e| local(format!("cannot open the raw disk {shown}"), e))?;
    let size = disk_size(&file).map_err(|e| local(format!("cannot read the size of the raw disk {shown}"), e))?;
    if size == 0 {
        return Err(BuildError::new(ErrorKind::Config, format!("the raw disk {shown} is empty: nothing to upload")));
    }
    let gib = size.div_ceil(GIB);
    if gib > MAX_VOLUME_GIB {
        return Err(BuildError::new(
            ErrorKind::Config,
            format!("the raw disk {shown} is {gib} GiB: EBS volumes are at most {MAX_VOLUME_GIB} GiB"),
        ));
    }
    let volume_size_gib = gib as i64;

    let tags: Vec<Tag> = opts.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    let out = clients
        .ebs
        .start_snapshot()
        .volume_size(volume_size_gib)
        .set_description((!opts.description.is_empty()).then(|| opts.description.clone()))
        .set_tags((!tags.is_empty()).then_some(tags))
        .set_encrypted((opts.encrypted || opts.kms_key_arn.is_some()).then_some(true))
        .set_kms_key_arn(opts.kms_key_arn.clone())
        .timeout(opts.timeout_minutes.clamp(10, 4320))
        .set_client_token(opts.client_token.clone())
        .send()
        .await
        .api("StartSnapshot", region, Some(shown.clone()))
        .map_err(|e| {
            // Refused (a 4xx that is not throttling): nothing exists, and the error is `Config`, so a
            // caller can drop its intent to clean up. Otherwise a snapshot may exist.
            if e.status.is_some_and(|s| (400..500).contains(&s)) && !e.is_transient() {
                let message = format!("{e}; nothing was created: fix the cause and run the build again");
                BuildError::new(ErrorKind::Config, message).caused_by(e)
            } else {
                let message =
                    format!("{e}; a snapshot may have been created: the build's cleanup looks for it by its tags");
                BuildError::new(ErrorKind::Platform, message).caused_by(e)
            }
        })?;
    let snapshot_id = out.snapshot_id().unwrap_or_default().to_string();
    if snapshot_id.is_empty() {
        return Err(crate::error::platform(format!(
            "StartSnapshot in {region} ({shown}) answered without a snapshot id: nothing to upload into"
        )));
    }
    started(&snapshot_id)?;
    let fail = |what: String| {
        BuildError::new(
            ErrorKind::Platform,
            format!(
                "uploading {shown} to snapshot {snapshot_id} ({region}): {what}; the snapshot is incomplete (the \
                 build's cleanup deletes it)"
            ),
        )
    };
    let block_size = match out.block_size() {
        Some(b) if b > 0 && (b as u64) <= 64 << 20 => b as u32,
        other => return Err(fail(format!("StartSnapshot answered an unusable block size {other:?}"))),
    };
    let bs = u64::from(block_size);
    let total_blocks = size.div_ceil(bs);
    if total_blocks > i32::MAX as u64 + 1 {
        return Err(fail(format!("{total_blocks} blocks of {block_size} bytes are more than EBS block indexes count")));
    }
    tracing::debug!(%snapshot_id, block_size, size, "EBS direct upload started");

    // The reader: one blocking thread, in order, a few blocks ahead of the calls in flight.
    let workers = opts.workers.max(1);
    let (tx, rx) = mpsc::channel::<Block>(QUEUED_BLOCKS);
    let scanned = Arc::new(AtomicU64::new(0));
    let reader = {
        let scanned = scanned.clone();
        tokio::task::spawn_blocking(move || scan(&file, size, bs, &scanned, |b| tx.blocking_send(b).is_ok()))
    };

    let ebs = &clients.ebs;
    let mut tick = tokio::time::interval_at(began + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut sent = 0u64;
    // In a block of its own: leaving it drops the calls in flight and closes the queue, so the
    // reader stops at its next block.
    let failed = {
        let puts = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(|b: Block| {
                let id = snapshot_id.as_str();
                async move {
                    let index = b.index;
                    ebs.put_snapshot_block()
                        .snapshot_id(id)
                        .block_index(index as i32)
                        .data_length(b.data.len() as i32)
                        .block_data(ByteStream::from(b.data))
                        .checksum(b.checksum)
                        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                        .send()
                        .await
                        .api("PutSnapshotBlock", region, Some(format!("{id} block {index}")))
                        .map(|_| ())
                        .map_err(|e| (index, e))
                }
            })
            .buffer_unordered(workers);
        let mut puts = std::pin::pin!(puts);
        loop {
            tokio::select! {
                next = puts.next() => match next {
                    None => break None,
                    Some(Ok(())) => sent += 1,
                    Some(Err((index, e))) => break Some((index, e)),
                },
                _ = tick.tick() => {
                    let done = scanned.load(Ordering::Relaxed);
                    events.emit(EventKind::Transfer { path: shown.clone(), done, total: Some(size) });
                }
            }
        }
    };
    let scan = reader.await.map_err(|e| fail(format!("the disk reader stopped: {e}")))?;
    if let Some((index, e)) = failed {
        let message = fail(format!(
            "block {index} (disk offset {}) failed after the SDK's retries: {e}; check the error, then run the \
             build again",
            index * bs
        ))
        .message;
        return Err(BuildError::new(ErrorKind::Platform, message).caused_by(e));
    }
    let scan = match scan {
        Ok(s) => s,
        Err(ScanError::Io { offset, source }) => {
            return Err(fail(format!("reading the disk at offset {offset} failed: {source}")).caused_by(source));
        }
        Err(ScanError::Stopped) => return Err(fail("the disk reader stopped early".into())),
    };
    if scan.blocks != sent {
        return Err(fail(format!("{} blocks read but {sent} acknowledged", scan.blocks)));
    }

    // "To generate the aggregated checksum using the linear aggregation method, arrange the
    // checksums for each written block in ascending order of their block index, concatenate them to
    // form a single string, and then generate the checksum on the entire string using the SHA256
    // algorithm" (EBS direct API reference, CompleteSnapshot, `x-amz-Checksum`,
    // https://docs.aws.amazon.com/ebs/latest/APIReference/API_CompleteSnapshot.html). The
    // checksums concatenated are the raw 32-byte digests, not their base64 text: that is what AWS
    // accepts from coldsnap (awslabs), whose upload hashes `hash_bytes` in block order.
    let aggregate = base64::engine::general_purpose::STANDARD.encode(scan.aggregate.finish());
    let changed = i32::try_from(scan.blocks).map_err(|_| fail(format!("{} blocks is too many", scan.blocks)))?;
    let done = clients
        .ebs
        .complete_snapshot()
        .snapshot_id(&snapshot_id)
        .changed_blocks_count(changed)
        .checksum(aggregate)
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await
        .api("CompleteSnapshot", region, Some(snapshot_id.clone()))
        .map_err(|e| {
            let m = fail(format!("all {} blocks were sent but completing failed: {e}", scan.blocks)).message;
            BuildError::new(ErrorKind::Platform, m).caused_by(e)
        })?;
    if done.status() == Some(&Status::Error) {
        return Err(fail("CompleteSnapshot answered status `error`".into()));
    }
    let elapsed = began.elapsed();
    let bytes_written = scan.blocks * bs;
    events.info(format!(
        "uploaded {shown} to snapshot {snapshot_id} ({region}): {} blocks of {block_size} bytes ({}) of a {volume_size_gib} \
         GiB volume in {:.1} s ({:.1} MB/s)",
        scan.blocks,
        megabytes(bytes_written),
        elapsed.as_secs_f64(),
        bytes_written as f64 / 1e6 / elapsed.as_secs_f64().max(1e-3)
    ));
    Ok(Uploaded {
        snapshot_id: snapshot_id.clone(),
        volume_size_gib,
        block_size,
        blocks_written: scan.blocks,
        bytes_written,
        elapsed,
    })
}

/// Wait until EC2 lists snapshot `snapshot_id` as `completed` (DescribeSnapshots, polled with
/// backoff); `error` ends the wait with AWS's message.
pub async fn wait_completed(clients: &Clients, snapshot_id: &str, timeout: Duration) -> Result<(), BuildError> {
    let region = clients.region();
    let what = format!("snapshot {snapshot_id} ({region}) to be completed");
    let wait = crate::waiters::Polling::default().wait(timeout);
    let r = wait::until(&wait, &what, || async move {
        let found = clients.ec2.describe_snapshots().snapshot_ids(snapshot_id).send().await.api(
            "DescribeSnapshots",
            region,
            Some(snapshot_id.into()),
        );
        match found {
            Ok(out) => match out.snapshots().iter().find(|s| s.snapshot_id() == Some(snapshot_id)) {
                None => Poll::Pending("not visible yet".into()),
                Some(s) => match s.state() {
                    Some(SnapshotState::Completed) => Poll::Ready(()),
                    Some(SnapshotState::Error) => Poll::Failed(BuildError::new(
                        ErrorKind::Platform,
                        format!(
                            "snapshot {snapshot_id} ({region}) ended in state `error`: {}; its data is lost: delete it \
                             (the build's cleanup does) and run the build again",
                            s.state_message().unwrap_or("no reason given")
                        ),
                    )),
                    state => Poll::Pending(format!(
                        "{} {}",
                        state.map(|s| s.as_str()).unwrap_or("unknown"),
                        s.progress().unwrap_or_default()
                    )),
                },
            },
            Err(e) if e.is_not_found() => Poll::Pending("not visible yet".into()),
            Err(e) if e.is_transient() => Poll::Pending(format!("API trouble, retrying: {}", e.detail)),
            Err(e) => Poll::Failed(BuildError::from(e)),
        }
    })
    .await;
    r.map_err(|e| match e {
        WaitError::Failed(e) => e,
        e @ WaitError::TimedOut { .. } => BuildError::new(
            ErrorKind::Timeout,
            format!("{e}; large snapshots can take longer: wait longer, or check the snapshot in the EC2 console"),
        ),
    })
}

/// One block with data, ready to send.
struct Block {
    index: u64,
    data: Bytes,
    /// Its SHA256, base64.
    checksum: String,
}

/// What the reader sent.
struct Scanned {
    blocks: u64,
    /// SHA256 over the raw digests of the blocks sent, in block order (they are sent in order).
    aggregate: Context,
}

enum ScanError {
    Io {
        offset: u64,
        source: io::Error,
    },
    /// The uploader stopped listening (a block failed).
    Stopped,
}

/// The size of a file or block device.
fn disk_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    // A block device has no length in its metadata: its end is its size.
    let end = nix::unistd::lseek(file, 0, nix::unistd::Whence::SeekEnd).map_err(io::Error::from)?;
    Ok(end as u64)
}

/// The next stretch of `[from, len)` that may hold data: `(start, end)`. Without hole support
/// (filesystem or device), all of it.
fn next_data(file: &File, from: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    use nix::errno::Errno;
    use nix::unistd::{Whence, lseek};
    if from >= len {
        return Ok(None);
    }
    let start = match lseek(file, from as i64, Whence::SeekData) {
        Ok(p) => p as u64,
        // No data after `from`.
        Err(Errno::ENXIO) => return Ok(None),
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => return Ok(Some((from, len))),
        Err(e) => return Err(e.into()),
    };
    if start >= len {
        return Ok(None);
    }
    let end = match lseek(file, start as i64, Whence::SeekHole) {
        Ok(p) => (p as u64).min(len),
        Err(_) => len,
    };
    Ok(Some((start, end.max(start))))
}

/// True when every byte is zero (folded per chunk, which vectorizes).
fn all_zero(data: &[u8]) -> bool {
    data.chunks(4096).all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// Read the disk once in order; send every block with data, hashed; skip holes and zero blocks.
fn scan(
    file: &File,
    len: u64,
    bs: u64,
    scanned: &AtomicU64,
    mut send: impl FnMut(Block) -> bool,
) -> Result<Scanned, ScanError> {
    let per_read = (READ_CHUNK / bs).max(1);
    let mut aggregate = Context::new(&SHA256);
    let mut blocks = 0u64;
    let mut next_block = 0u64;
    let io_at = |offset: u64| move |source: io::Error| ScanError::Io { offset, source };
    while let Some((start, end)) = next_data(file, next_block * bs, len).map_err(io_at(next_block * bs))? {
        let first = (start / bs).max(next_block);
        let last = end.div_ceil(bs);
        let mut index = first;
        while index < last {
            let count = per_read.min(last - index);
            let offset = index * bs;
            let mut buf = BytesMut::zeroed((count * bs) as usize);
            // The disk's last block may be short: the rest of it stays zero (the volume is larger).
            let readable = (len - offset).min(count * bs) as usize;
            file.read_exact_at(&mut buf[..readable], offset).map_err(io_at(offset))?;
            let buf = buf.freeze();
            for k in 0..count {
                let part = buf.slice((k * bs) as usize..((k + 1) * bs) as usize);
                if all_zero(&part) {
                    continue;
                }
                // ring's SHA256 (SHA-NI / AVX assembly): fast even in unoptimised builds.
                let digest = ring::digest::digest(&SHA256, &part);
                aggregate.update(digest.as_ref());
                let data = if count == 1 { part } else { Bytes::copy_from_slice(&part) };
                let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
                if !send(Block { index: index + k, data, checksum }) {
                    return Err(ScanError::Stopped);
                }
                blocks += 1;
            }
            index += count;
            scanned.store((index * bs).min(len), Ordering::Relaxed);
        }
        next_block = last;
    }
    scanned.store(len, Ordering::Relaxed);
    Ok(Scanned { blocks, aggregate })
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The LINEAR aggregate checksum of blocks (in block order), base64: what CompleteSnapshot carries.
pub fn linear_checksum<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut aggregate = Context::new(&SHA256);
    for b in blocks {
        aggregate.update(ring::digest::digest(&SHA256, b).as_ref());
    }
    base64::engine::general_purpose::STANDARD.encode(aggregate.finish())
}

/// The disk's blocks with data, as the upload sends them: `(index, data)` in order (for tests and
/// checks: it holds them all in memory).
pub fn data_blocks(raw_disk: &Path, block_size: u32) -> io::Result<Vec<(u64, Bytes)>> {
    let file = File::open(raw_disk)?;
    let len = disk_size(&file)?;
    let mut out = Vec::new();
    let scanned = AtomicU64::new(0);
    match scan(&file, len, u64::from(block_size.max(1)), &scanned, |b| {
        out.push((b.index, b.data));
        true
    }) {
        Ok(_) => Ok(out),
        Err(ScanError::Io { source, .. }) => Err(source),
        Err(ScanError::Stopped) => Err(io::Error::other("the reader stopped")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn holes_and_zero_blocks_are_skipped_and_the_short_last_block_is_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut f = File::create(&path).unwrap();
        f.set_len(10 * 4096 + 10).unwrap();
        for (offset, data) in [(100u64, vec![7u8; 10]), (4096 * 3 - 2, vec![9u8; 4]), (4096 * 5, vec![0u8; 4096])] {
            f.seek(SeekFrom::Start(offset)).unwrap();
            f.write_all(&data).unwrap();
        }
        f.seek(SeekFrom::Start(10 * 4096)).unwrap();
        f.write_all(&[1u8; 10]).unwrap();
        f.sync_all().unwrap();
        let blocks = data_blocks(&path, 4096).unwrap();
        let indexes: Vec<u64> = blocks.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![0, 2, 3, 10]);
        assert!(blocks.iter().all(|(_, b)| b.len() == 4096));
        assert_eq!(&blocks[3].1[..10], &[1u8; 10]);
        assert!(blocks[3].1[10..].iter().all(|b| *b == 0));
        // Many small blocks read per chunk, the same answer.
        let small = data_blocks(&path, 512).unwrap();
        assert_eq!(small.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 23, 24, 80]);
    }

    #[test]
    fn the_aggregate_is_over_raw_digests_in_order() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let mut h = Sha256::new();
        h.update(Sha256::digest(a));
        h.update(Sha256::digest(b));
        assert_eq!(linear_checksum([&a[..], &b[..]]), base64::engine::general_purpose::STANDARD.encode(h.finalize()));
        assert_ne!(linear_checksum([&a[..], &b[..]]), linear_checksum([&b[..], &a[..]]));
        assert!(all_zero(&[0u8; 10_000]) && !all_zero(&[0, 0, 1]));
    }
}
