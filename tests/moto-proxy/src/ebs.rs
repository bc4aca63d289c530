//! The EBS direct APIs through the proxy (StartSnapshot, PutSnapshotBlock, CompleteSnapshot).
//!
//! moto keeps every block but checks nothing (no checksum, no length, no block count), answers a
//! block size of 512 bytes (AWS: 524288) and serves about 500 requests a second, and its EC2
//! snapshot is `completed` from StartSnapshot on. Through the proxy, like AWS:
//!
//! - every PutSnapshotBlock is checked (length = the block size, SHA256 = its `x-amz-Checksum`, the
//!   index inside the volume) and CompleteSnapshot too (`x-amz-ChangedBlocksCount` = the blocks
//!   written, the LINEAR aggregate checksum): a mismatch is answered with a `ValidationException`;
//! - EC2's DescribeSnapshots shows a snapshot started by StartSnapshot as `pending` until
//!   CompleteSnapshot succeeded;
//! - in fast mode ([`crate::MotoProxy::ebs_block_size`]) StartSnapshot still goes to moto (which
//!   makes the EC2 snapshot, with its tags and volume size) but answers the chosen block size, and
//!   the proxy takes the blocks itself (checked, counted, not stored); CompleteSnapshot is checked,
//!   then forwarded to moto. The snapshot can then be registered as an AMI like any other; its
//!   blocks cannot be read back.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use hyper::HeaderMap;
use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;

/// One snapshot written through the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EbsSnapshot {
    /// The snapshot id.
    pub snapshot_id: String,
    /// The volume size asked for (GiB).
    pub volume_size_gib: u64,
    /// The block size answered to the client.
    pub block_size: u32,
    /// The proxy took the blocks itself (fast mode); moto has none of them.
    pub fast: bool,
    /// Blocks accepted: index → SHA256 (base64).
    pub blocks: BTreeMap<u32, String>,
    /// Bytes accepted.
    pub bytes: u64,
    /// Blocks and completions refused (bad length, checksum, index, count).
    pub rejected: u32,
    /// CompleteSnapshot succeeded.
    pub completed: bool,
}

/// The proxy's EBS state.
#[derive(Default)]
pub(crate) struct Ebs {
    /// Fast mode: the block size answered to StartSnapshot.
    pub fast_block_size: Option<u32>,
    snapshots: HashMap<String, EbsSnapshot>,
    /// Snapshot ids in the order they were started.
    order: Vec<String>,
    /// Raw digests of the blocks accepted, per snapshot (for the aggregate).
    digests: HashMap<String, BTreeMap<u32, [u8; 32]>>,
}

/// A refusal, answered as AWS's `ValidationException`.
#[derive(Debug)]
pub(crate) struct Refused {
    pub reason: &'static str,
    pub message: String,
}

impl Refused {
    fn new(reason: &'static str, message: String) -> Self {
        Refused { reason, message }
    }

    /// The restJson1 error body and its code (`x-amzn-ErrorType`).
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message, "Reason": self.reason }).to_string()
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Ebs {
    /// Every snapshot, in the order started.
    pub fn snapshots(&self) -> Vec<EbsSnapshot> {
        self.order.iter().filter_map(|id| self.snapshots.get(id)).cloned().collect()
    }

    /// A snapshot started through the proxy and not completed yet (EC2 shows it `pending`).
    pub fn pending(&self, id: &str) -> bool {
        self.snapshots.get(id).is_some_and(|s| !s.completed)
    }

    /// Is `id` a fast-mode snapshot (the proxy answers its blocks)?
    pub fn is_fast(&self, id: &str) -> bool {
        self.snapshots.get(id).is_some_and(|s| s.fast)
    }

    /// moto answered StartSnapshot: remember the snapshot; in fast mode answer our block size.
    /// Returns the body to answer (`None`: moto's as it is).
    pub fn started(&mut self, answer: &[u8]) -> Option<Vec<u8>> {
        let mut doc: serde_json::Value = serde_json::from_slice(answer).ok()?;
        let id = doc.get("SnapshotId")?.as_str()?.to_string();
        let volume_size_gib = doc.get("VolumeSize").and_then(|v| v.as_u64()).unwrap_or(0);
        let moto_block = doc.get("BlockSize").and_then(|v| v.as_u64()).unwrap_or(512) as u32;
        let block_size = self.fast_block_size.unwrap_or(moto_block);
        let snap = EbsSnapshot {
            snapshot_id: id.clone(),
            volume_size_gib,
            block_size,
            fast: self.fast_block_size.is_some(),
            ..EbsSnapshot::default()
        };
        self.snapshots.insert(id.clone(), snap);
        self.order.push(id);
        if block_size == moto_block {
            return None;
        }
        doc["BlockSize"] = serde_json::json!(block_size);
        serde_json::to_vec(&doc).ok()
    }

    /// Check a PutSnapshotBlock; record it when good. Returns its checksum (base64). `digest` is
    /// the body's SHA256 (computed by the caller outside the proxy's lock).
    pub fn put_block(
        &mut self,
        id: &str,
        index: &str,
        h: &HeaderMap,
        body: &[u8],
        digest: [u8; 32],
    ) -> Result<String, Refused> {
        let Some(snap) = self.snapshots.get_mut(id) else {
            // Not started through the proxy: moto decides.
            return Ok(header(h, "x-amz-checksum").unwrap_or_default().to_string());
        };
        let check = || -> Result<(u32, [u8; 32], String), Refused> {
            if snap.completed {
                return Err(Refused::new("INVALID_SNAPSHOT_ID", format!("snapshot {id} is already completed")));
            }
            let index: u32 = index
                .parse()
                .map_err(|_| Refused::new("INVALID_BLOCK", format!("block index `{index}` is not a number")))?;
            let blocks = snap.volume_size_gib * GIB / u64::from(snap.block_size.max(1));
            if u64::from(index) >= blocks {
                return Err(Refused::new(
                    "INVALID_BLOCK",
                    format!("block index {index} is beyond the volume ({blocks} blocks of {} bytes)", snap.block_size),
                ));
            }
            let stated = header(h, "x-amz-data-length").and_then(|v| v.parse::<u64>().ok());
            if stated != Some(body.len() as u64) || body.len() as u64 != u64::from(snap.block_size) {
                return Err(Refused::new(
                    "INVALID_PARAMETER_VALUE",
                    format!(
                        "block {index}: x-amz-Data-Length {stated:?}, {} bytes sent; the block size is {}",
                        body.len(),
                        snap.block_size
                    ),
                ));
            }
            if header(h, "x-amz-checksum-algorithm") != Some("SHA256") {
                return Err(Refused::new(
                    "INVALID_PARAMETER_VALUE",
                    format!("block {index}: the checksum algorithm must be SHA256"),
                ));
            }
            let actual = b64(&digest);
            let stated = header(h, "x-amz-checksum").unwrap_or_default();
            if stated != actual {
                return Err(Refused::new(
                    "INVALID_CHECKSUM",
                    format!("block {index}: the checksum {stated:?} does not match the data (SHA256 {actual})"),
                ));
            }
            Ok((index, digest, actual))
        };
        match check() {
            Ok((index, digest, text)) => {
                if snap.blocks.insert(index, text.clone()).is_none() {
                    snap.bytes += body.len() as u64;
                }
                self.digests.entry(id.to_string()).or_default().insert(index, digest);
                Ok(text)
            }
            Err(r) => {
                snap.rejected += 1;
                Err(r)
            }
        }
    }

    /// Check a CompleteSnapshot: the block count and the LINEAR aggregate checksum.
    pub fn check_complete(&mut self, id: &str, h: &HeaderMap) -> Result<(), Refused> {
        let Some(snap) = self.snapshots.get_mut(id) else { return Ok(()) };
        let digests = self.digests.get(id).cloned().unwrap_or_default();
        let count = header(h, "x-amz-changedblockscount").and_then(|v| v.parse::<usize>().ok());
        let r = if count != Some(digests.len()) {
            Err(Refused::new(
                "INVALID_PARAMETER_VALUE",
                format!("x-amz-ChangedBlocksCount is {count:?} but {} blocks were written", digests.len()),
            ))
        } else if let Some(stated) = header(h, "x-amz-checksum") {
            let algorithm = header(h, "x-amz-checksum-algorithm");
            let method = header(h, "x-amz-checksum-aggregation-method");
            let want = linear(digests.values());
            if algorithm != Some("SHA256") || method != Some("LINEAR") {
                Err(Refused::new(
                    "INVALID_PARAMETER_VALUE",
                    format!(
                        "an aggregate checksum needs algorithm SHA256 and method LINEAR, not {algorithm:?}/{method:?}"
                    ),
                ))
            } else if stated != want {
                Err(Refused::new(
                    "INVALID_CHECKSUM",
                    format!(
                        "the aggregate checksum {stated:?} does not match the blocks written (LINEAR SHA256 {want})"
                    ),
                ))
            } else {
                Ok(())
            }
        } else {
            Ok(())
        };
        if r.is_err() {
            snap.rejected += 1;
        }
        r
    }

    /// CompleteSnapshot succeeded.
    pub fn completed(&mut self, id: &str) {
        if let Some(s) = self.snapshots.get_mut(id) {
            s.completed = true;
        }
    }

    /// Forget everything recorded (fast mode stays).
    pub fn clear(&mut self) {
        self.snapshots.clear();
        self.order.clear();
        self.digests.clear();
    }
}

/// The LINEAR aggregate: SHA256 over the raw block digests in block order, base64.
pub fn linear<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for d in digests {
        h.update(d);
    }
    b64(h.finish().as_ref())
}

/// SHA256 with ring (assembly: fast in unoptimised test builds too).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn put_headers(len: usize, checksum: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-amz-data-length", len.to_string().parse().unwrap());
        h.insert("x-amz-checksum", checksum.parse().unwrap());
        h.insert("x-amz-checksum-algorithm", "SHA256".parse().unwrap());
        h
    }

    #[test]
    fn fast_mode_checks_blocks_and_the_aggregate() {
        let mut ebs = Ebs { fast_block_size: Some(1024), ..Ebs::default() };
        let answer = br#"{"SnapshotId":"snap-1","VolumeSize":1,"BlockSize":512,"Status":"pending"}"#;
        let body = ebs.started(answer).expect("the block size is rewritten");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["BlockSize"], 1024);
        assert!(ebs.pending("snap-1") && ebs.is_fast("snap-1"));

        let a = vec![1u8; 1024];
        let b = vec![2u8; 1024];
        let sum = |d: &[u8]| b64(&Sha256::digest(d));
        let raw = |d: &[u8]| -> [u8; 32] { Sha256::digest(d).into() };
        assert_eq!(ebs.put_block("snap-1", "7", &put_headers(1024, &sum(&b)), &b, raw(&b)).unwrap(), sum(&b));
        assert_eq!(ebs.put_block("snap-1", "3", &put_headers(1024, &sum(&a)), &a, raw(&a)).unwrap(), sum(&a));
        // Wrong checksum, wrong length, index beyond the volume.
        assert_eq!(
            ebs.put_block("snap-1", "4", &put_headers(1024, &sum(&b)), &a, raw(&a)).unwrap_err().reason,
            "INVALID_CHECKSUM"
        );
        assert!(ebs.put_block("snap-1", "4", &put_headers(512, &sum(&a[..512])), &a[..512], raw(&a[..512])).is_err());
        assert_eq!(
            ebs.put_block("snap-1", &(1u64 << 20).to_string(), &put_headers(1024, &sum(&a)), &a, raw(&a))
                .unwrap_err()
                .reason,
            "INVALID_BLOCK"
        );

        let mut h = HeaderMap::new();
        h.insert("x-amz-changedblockscount", "2".parse().unwrap());
        h.insert("x-amz-checksum-algorithm", "SHA256".parse().unwrap());
        h.insert("x-amz-checksum-aggregation-method", "LINEAR".parse().unwrap());
        // In block order (3 then 7), not in the order sent.
        let mut wrong = Sha256::new();
        wrong.update(Sha256::digest(&b));
        wrong.update(Sha256::digest(&a));
        h.insert("x-amz-checksum", b64(&wrong.finalize()).parse().unwrap());
        assert_eq!(ebs.check_complete("snap-1", &h).unwrap_err().reason, "INVALID_CHECKSUM");
        let mut right = Sha256::new();
        right.update(Sha256::digest(&a));
        right.update(Sha256::digest(&b));
        h.insert("x-amz-checksum", b64(&right.finalize()).parse().unwrap());
        ebs.check_complete("snap-1", &h).unwrap();
        ebs.completed("snap-1");
        let s = &ebs.snapshots()[0];
        assert_eq!((s.blocks.len(), s.bytes, s.rejected, s.completed), (2, 2048, 4, true));
        assert!(!ebs.pending("snap-1"));
    }
}
