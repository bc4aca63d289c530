//! The EBS direct upload ([`imgbake_aws::ebs_direct`]) against the bed: moto behind imgbake's proxy,
//! which checks every block's SHA256 and CompleteSnapshot's block count and LINEAR aggregate like
//! AWS does (moto checks nothing). Small sparse disks with moto's own 512-byte blocks, read back
//! through the EBS API; the proxy's fast mode (AWS's 524288-byte blocks) up to RegisterImage; faults.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use imgbake_aws::ebs_direct::{self, UploadOptions, Uploaded};
use imgbake_aws::{ClientCache, ClientOptions, Clients, Environment, Session};
use imgbake_core::error::BuildError;
use imgbake_core::event::{EventKind, EventSink};
use imgbake_moto_proxy::{Fault, FaultRule, MotoProxy};
use imgbake_testbed::Moto;

const REGION: &str = "eu-west-1";
const MIB: u64 = 1 << 20;

struct Bed {
    _moto: Moto,
    proxy: MotoProxy,
    clients: Arc<Clients>,
    dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    let moto = Moto::start().await.expect("moto server (run tests/bed/install.sh)");
    let proxy = MotoProxy::start(&moto.endpoint()).await.unwrap();
    let creds = Credentials::new(
        imgbake_testbed::ACCESS_KEY_ID,
        imgbake_testbed::SECRET_ACCESS_KEY,
        None,
        None,
        "imgbake-test",
    );
    let cache = ClientCache::new(ClientOptions {
        credentials: Some(SharedCredentialsProvider::new(creds)),
        environment: Environment::Isolated,
        initial_backoff: Duration::from_millis(20),
        ..ClientOptions::default()
    });
    let session = Session { region: REGION.into(), profile: None, endpoint: Some(proxy.endpoint()), role: None };
    let clients = cache.get(&session).await;
    Bed { _moto: moto, proxy, clients, dir: tempfile::tempdir().unwrap() }
}

/// Deterministic non-zero bytes.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect()
}

/// A sparse disk of 3 MiB + 100 bytes: data in blocks 0 and 1, 100 bytes across a block boundary
/// at 1 MiB + 1000, an explicitly written all-zero 4 KiB run at 2 MiB (allocated, reads as zero), and
/// a short last block with data; holes everywhere else.
fn sparse_disk(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(3 * MIB + 100).unwrap();
    let mut at = |offset: u64, data: &[u8]| {
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(data).unwrap();
    };
    at(0, &pattern(1, 1024));
    at(MIB + 1000, &pattern(2, 100));
    at(2 * MIB, &[0u8; 4096]);
    at(3 * MIB, &pattern(3, 100));
    f.sync_all().unwrap();
}

/// The blocks with data, computed here without imgbake: the whole file in `bs`-byte blocks (the
/// last one padded with zeroes), all-zero ones left out.
fn expected_blocks(path: &Path, bs: usize) -> Vec<(i32, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks(bs)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|b| *b != 0))
        .map(|(i, c)| {
            let mut block = c.to_vec();
            block.resize(bs, 0);
            (i as i32, block)
        })
        .collect()
}

fn options() -> UploadOptions {
    UploadOptions {
        description: "imgbake test disk".into(),
        tags: vec![("team".into(), "core".into()), ("imgbake:build".into(), "b-1".into())],
        workers: 8,
        ..UploadOptions::default()
    }
}

async fn upload(bed: &Bed, disk: &Path, opts: &UploadOptions) -> (Result<Uploaded, BuildError>, Vec<String>) {
    let seen = Mutex::new(Vec::new());
    let started = |id: &str| -> Result<(), BuildError> {
        seen.lock().unwrap().push(id.to_string());
        Ok(())
    };
    let r = ebs_direct::upload(&bed.clients, disk, opts, &started, &EventSink::discard()).await;
    (r, seen.into_inner().unwrap())
}

#[tokio::test]
async fn a_sparse_disk_is_uploaded_with_moto_blocks_and_reads_back_byte_for_byte() {
    let bed = bed().await;
    let disk = bed.dir.path().join("disk.raw");
    sparse_disk(&disk);
    let (events, log) = EventSink::memory();
    let seen = Mutex::new(Vec::new());
    let started = |id: &str| -> Result<(), BuildError> {
        seen.lock().unwrap().push(id.to_string());
        Ok(())
    };
    let up = ebs_direct::upload(&bed.clients, &disk, &options(), &started, &events).await.unwrap();
    let want = expected_blocks(&disk, 512);
    assert_eq!(want.len(), 5, "blocks 0, 1, the two at 1 MiB + 1000, the last one");
    assert_eq!(seen.into_inner().unwrap(), vec![up.snapshot_id.clone()], "started with the snapshot id, once");
    assert_eq!((up.block_size, up.volume_size_gib), (512, 1), "moto's block size, taken from StartSnapshot");
    assert_eq!((up.blocks_written, up.bytes_written), (want.len() as u64, want.len() as u64 * 512));
    assert!(
        log.events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Info { message } if message.contains(&up.snapshot_id))),
        "a summary names the snapshot"
    );

    // Read back through the EBS API: exactly the blocks with data, byte for byte.
    let listed = bed.clients.ebs.list_snapshot_blocks().snapshot_id(&up.snapshot_id).send().await.unwrap();
    let mut got: Vec<(i32, String)> = listed
        .blocks()
        .iter()
        .map(|b| (b.block_index().unwrap(), b.block_token().unwrap_or_default().to_string()))
        .collect();
    got.sort();
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), want.iter().map(|(i, _)| *i).collect::<Vec<_>>());
    for ((index, token), (_, data)) in got.iter().zip(&want) {
        let block = bed
            .clients
            .ebs
            .get_snapshot_block()
            .snapshot_id(&up.snapshot_id)
            .block_index(*index)
            .block_token(token)
            .send()
            .await
            .unwrap();
        let bytes = block.block_data.collect().await.unwrap().into_bytes();
        assert_eq!(&bytes[..], &data[..], "block {index}");
    }

    // EC2 sees the snapshot: tags, size, and `completed` once CompleteSnapshot went through.
    ebs_direct::wait_completed(&bed.clients, &up.snapshot_id, Duration::from_secs(30)).await.unwrap();
    let out = bed.clients.ec2.describe_snapshots().snapshot_ids(&up.snapshot_id).send().await.unwrap();
    let snap = &out.snapshots()[0];
    assert_eq!(snap.volume_size(), Some(1));
    assert_eq!(snap.state().map(|s| s.as_str()), Some("completed"));
    let mut tags: Vec<(String, String)> = snap
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
        .collect();
    tags.sort();
    assert_eq!(tags, vec![("imgbake:build".into(), "b-1".into()), ("team".into(), "core".into())]);

    // The proxy checked every block's SHA256 and the LINEAR aggregate, like AWS: nothing refused.
    let recorded = bed.proxy.ebs_snapshots();
    assert_eq!(recorded.len(), 1);
    assert_eq!((recorded[0].blocks.len(), recorded[0].rejected, recorded[0].completed), (want.len(), 0, true));
    assert_eq!(bed.proxy.count("PutSnapshotBlock"), want.len() as u32, "only blocks with data are sent");
}

#[tokio::test]
async fn the_aggregate_checksum_is_what_python_hashlib_computes() {
    // Three blocks in block order; the reference value comes from Python's hashlib, not from us.
    let blocks = [pattern(7, 512), pattern(8, 512), vec![0xff; 512]];
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let p = dir.path().join(format!("b{i}"));
        std::fs::write(&p, b).unwrap();
        files.push(p.display().to_string());
    }
    let script = "import base64, hashlib, sys\n\
        print(base64.b64encode(hashlib.sha256(b''.join(hashlib.sha256(open(p, 'rb').read()).digest() for p in sys.argv[1:])).digest()).decode())";
    let out = std::process::Command::new("python3").arg("-c").arg(script).args(&files).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let ours = ebs_direct::linear_checksum(blocks.iter().map(|b| b.as_slice()));
    assert_eq!(ours, python);
}

#[tokio::test]
async fn fast_mode_uploads_aws_sized_blocks_and_the_snapshot_registers_as_an_ami() {
    let bed = bed().await;
    bed.proxy.ebs_block_size(524_288);
    let disk = bed.dir.path().join("disk.raw");
    sparse_disk(&disk);
    let (up, seen) = upload(&bed, &disk, &options()).await;
    let up = up.unwrap();
    assert_eq!(seen, vec![up.snapshot_id.clone()]);
    let want = expected_blocks(&disk, 524_288);
    assert_eq!(want.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 2, 6], "the zero run at 2 MiB is skipped");
    assert_eq!((up.block_size, up.blocks_written), (524_288, 3));
    let recorded = &bed.proxy.ebs_snapshots()[0];
    assert!(recorded.fast && recorded.completed);
    assert_eq!((recorded.blocks.len(), recorded.bytes, recorded.rejected), (3, 3 * 524_288, 0));

    ebs_direct::wait_completed(&bed.clients, &up.snapshot_id, Duration::from_secs(30)).await.unwrap();
    let ami = bed
        .clients
        .ec2
        .register_image()
        .name("from-ebs-direct")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .virtualization_type("hvm")
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().snapshot_id(&up.snapshot_id).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let id = ami.image_id().unwrap();
    let images = bed.clients.ec2.describe_images().image_ids(id).send().await.unwrap();
    assert_eq!(images.images()[0].state().map(|s| s.as_str()), Some("available"));
}

#[tokio::test]
async fn a_throttled_block_is_retried_and_a_refused_one_fails_naming_snapshot_and_block() {
    let bed = bed().await;
    bed.proxy.ebs_block_size(65_536);
    let disk = bed.dir.path().join("disk.raw");
    sparse_disk(&disk);

    bed.proxy.inject(FaultRule::new("PutSnapshotBlock", Fault::throttle(), 3));
    let (up, _) = upload(&bed, &disk, &options()).await;
    let up = up.expect("throttling is retried by the SDK");
    assert_eq!(bed.proxy.injected("PutSnapshotBlock"), 3);
    assert_eq!(up.blocks_written, expected_blocks(&disk, 65_536).len() as u64);
    assert_eq!(bed.proxy.ebs_snapshots()[0].rejected, 0);

    bed.proxy.reset();
    let refusal = Fault::error(400, "AccessDeniedException", "User is not authorized to perform ebs:PutSnapshotBlock");
    bed.proxy.inject(FaultRule::new("PutSnapshotBlock", refusal, u32::MAX).after(1));
    let (r, seen) = upload(&bed, &disk, &UploadOptions { workers: 1, ..options() }).await;
    let e = r.expect_err("a refused block fails the upload");
    let snap = &seen[0];
    assert!(e.message.contains(snap.as_str()), "{}", e.message);
    let second = expected_blocks(&disk, 65_536)[1].0;
    assert!(e.message.contains(&format!("block {second} ")), "names the block: {}", e.message);
    assert!(e.message.contains("AccessDeniedException"), "{}", e.message);
    assert!(e.message.contains("ebs:PutSnapshotBlock"), "{}", e.message);
    assert_eq!(bed.proxy.count("CompleteSnapshot"), 0, "never completed");
    assert!(bed.proxy.injected("PutSnapshotBlock") <= 2, "the upload stops at the failure");
}

#[tokio::test]
async fn an_unreadable_or_empty_disk_is_a_clear_error_before_anything_is_created() {
    let bed = bed().await;
    let empty = bed.dir.path().join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    let (r, seen) = upload(&bed, &empty, &options()).await;
    assert!(r.unwrap_err().message.contains("is empty"));
    let (r, _) = upload(&bed, &bed.dir.path().join("missing.raw"), &options()).await;
    assert!(r.unwrap_err().message.contains("cannot open the raw disk"));
    assert!(seen.is_empty());
    assert_eq!(bed.proxy.count("StartSnapshot"), 0);
}
