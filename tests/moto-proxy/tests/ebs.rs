//! The EBS direct APIs through the proxy, against a real moto, driven by the real AWS SDK: checks
//! like AWS (block SHA256, count and LINEAR aggregate), `pending` until completed, and fast mode.

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
use base64::Engine;
use imgbake_moto_proxy::MotoProxy;
use imgbake_testbed::Moto;
use sha2::{Digest, Sha256};

const REGION: &str = "eu-west-1";

async fn bed() -> (Moto, MotoProxy, aws_sdk_ebs::Client, aws_sdk_ec2::Client) {
    let moto = Moto::start().await.expect("moto server (run tests/bed/install.sh)");
    let proxy = MotoProxy::start(&moto.endpoint()).await.unwrap();
    let conf = moto.sdk_config(REGION).await;
    let ebs = aws_sdk_ebs::Client::from_conf(
        aws_sdk_ebs::config::Builder::from(&conf).endpoint_url(proxy.endpoint()).build(),
    );
    let ec2 = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&conf).endpoint_url(proxy.endpoint()).build(),
    );
    (moto, proxy, ebs, ec2)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn put(ebs: &aws_sdk_ebs::Client, snap: &str, index: i32, data: &[u8], checksum: &str) -> Result<(), String> {
    ebs.put_snapshot_block()
        .snapshot_id(snap)
        .block_index(index)
        .data_length(data.len() as i32)
        .block_data(ByteStream::from(data.to_vec()))
        .checksum(checksum)
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", aws_sdk_ebs::error::DisplayErrorContext(&e)))
}

async fn complete(ebs: &aws_sdk_ebs::Client, snap: &str, count: i32, checksum: &str) -> Result<(), String> {
    ebs.complete_snapshot()
        .snapshot_id(snap)
        .changed_blocks_count(count)
        .checksum(checksum)
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", aws_sdk_ebs::error::DisplayErrorContext(&e)))
}

async fn ec2_state(ec2: &aws_sdk_ec2::Client, snap: &str) -> String {
    let out = ec2.describe_snapshots().snapshot_ids(snap).send().await.unwrap();
    out.snapshots()[0].state().unwrap().as_str().to_string()
}

#[tokio::test]
async fn fast_mode_answers_aws_block_size_checks_everything_and_the_snapshot_completes_in_ec2() {
    let (_moto, proxy, ebs, ec2) = bed().await;
    proxy.ebs_block_size(524_288);
    let started = ebs
        .start_snapshot()
        .volume_size(1)
        .description("fast")
        .tags(aws_sdk_ebs::types::Tag::builder().key("k").value("v").build())
        .send()
        .await
        .unwrap();
    assert_eq!(started.block_size(), Some(524_288), "AWS's block size, not moto's 512");
    let snap = started.snapshot_id().unwrap().to_string();
    assert_eq!(ec2_state(&ec2, &snap).await, "pending", "pending until CompleteSnapshot, like AWS");

    let a = vec![0xa5u8; 524_288];
    let b: Vec<u8> = (0..524_288u32).map(|i| (i % 251) as u8).collect();
    let sum = |d: &[u8]| -> [u8; 32] { Sha256::digest(d).into() };
    // A wrong checksum and a short block are refused like AWS refuses them.
    let e = put(&ebs, &snap, 3, &a, &b64(&sum(&b))).await.unwrap_err();
    assert!(e.contains("ValidationException") && e.contains("INVALID_CHECKSUM"), "{e}");
    assert!(put(&ebs, &snap, 3, &a[..1000], &b64(&sum(&a[..1000]))).await.is_err());
    assert!(put(&ebs, &snap, 2048, &a, &b64(&sum(&a))).await.is_err(), "1 GiB has 2048 blocks");
    put(&ebs, &snap, 9, &b, &b64(&sum(&b))).await.unwrap();
    put(&ebs, &snap, 3, &a, &b64(&sum(&a))).await.unwrap();

    // The aggregate in block order (3, 9), not in the order sent.
    let linear = |ds: &[[u8; 32]]| {
        let mut h = Sha256::new();
        for d in ds {
            h.update(d);
        }
        b64(&h.finalize())
    };
    let e = complete(&ebs, &snap, 2, &linear(&[sum(&b), sum(&a)])).await.unwrap_err();
    assert!(e.contains("INVALID_CHECKSUM"), "{e}");
    assert!(complete(&ebs, &snap, 3, &linear(&[sum(&a), sum(&b)])).await.is_err(), "wrong count");
    assert_eq!(ec2_state(&ec2, &snap).await, "pending");
    complete(&ebs, &snap, 2, &linear(&[sum(&a), sum(&b)])).await.unwrap();
    assert_eq!(ec2_state(&ec2, &snap).await, "completed");

    let recorded = &proxy.ebs_snapshots()[0];
    assert!(recorded.fast && recorded.completed);
    assert_eq!((recorded.blocks.len(), recorded.bytes, recorded.rejected), (2, 2 * 524_288, 5));
    assert_eq!(proxy.count("PutSnapshotBlock"), 5);
    assert_eq!(proxy.count("StartSnapshot"), 1);

    // EC2 knows the snapshot (moto made it at StartSnapshot): it registers as an AMI.
    let snapshot = &ec2.describe_snapshots().snapshot_ids(&snap).send().await.unwrap().snapshots()[0].clone();
    assert_eq!(snapshot.volume_size(), Some(1));
    assert_eq!(snapshot.tags()[0].key(), Some("k"));
    let image = ec2
        .register_image()
        .name("from-snapshot")
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().snapshot_id(&snap).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(image.image_id().is_some());
}

#[tokio::test]
async fn without_fast_mode_blocks_reach_moto_checked_and_read_back() {
    let (_moto, proxy, ebs, ec2) = bed().await;
    let started = ebs.start_snapshot().volume_size(1).send().await.unwrap();
    assert_eq!(started.block_size(), Some(512), "moto's own");
    let snap = started.snapshot_id().unwrap().to_string();
    let data = vec![7u8; 512];
    let digest: [u8; 32] = Sha256::digest(&data).into();
    assert!(put(&ebs, &snap, 5, &data, &b64(&[0u8; 32])).await.unwrap_err().contains("INVALID_CHECKSUM"));
    put(&ebs, &snap, 5, &data, &b64(&digest)).await.unwrap();
    let listed = ebs.list_snapshot_blocks().snapshot_id(&snap).send().await.unwrap();
    assert_eq!(listed.blocks().len(), 1, "the refused block never reached moto");
    let got = ebs
        .get_snapshot_block()
        .snapshot_id(&snap)
        .block_index(5)
        .block_token(listed.blocks()[0].block_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(&got.block_data.collect().await.unwrap().into_bytes()[..], &data[..]);
    assert_eq!(ec2_state(&ec2, &snap).await, "pending");
    let aggregate = b64(&Sha256::digest(digest));
    complete(&ebs, &snap, 1, &aggregate).await.unwrap();
    assert_eq!(ec2_state(&ec2, &snap).await, "completed");
    assert!(!proxy.ebs_snapshots()[0].fast);
}
