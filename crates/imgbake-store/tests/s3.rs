//! `s3` stores against a real moto S3 server on loopback.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{data, file, listing, sha256_hex, store, within};
use imgbake_store::{Client, NoProgress, StoreError, Tuning};
use imgbake_testbed::Moto;

const REGION: &str = "us-east-1";
const BUCKET: &str = "imgbake-artifacts";

struct Bed {
    moto: Moto,
    sdk: aws_config::SdkConfig,
    s3: aws_sdk_s3::Client,
}

async fn bed() -> Bed {
    let moto = Moto::start().await.expect("moto (run tests/bed/install.sh)");
    let sdk = moto.sdk_config(REGION).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    s3.create_bucket().bucket(BUCKET).send().await.expect("create bucket");
    Bed { moto, sdk, s3 }
}

/// Multipart from 10 MiB in 5 MiB parts, so tests stay small.
fn small_parts() -> Tuning {
    Tuning { multipart_threshold: 10 << 20, part_size: 5 << 20, concurrency: 2, ..Tuning::default() }
}

fn client(bed: &Bed) -> Client {
    let store = store("bucket", &format!("type = \"s3\"\nbucket = \"{BUCKET}\"\nprefix = \"ci/\""));
    Client::s3_with_config(&store, &bed.sdk).expect("client").with_tuning(small_parts())
}

async fn stored(bed: &Bed, key: &str) -> (Vec<u8>, Option<String>) {
    let out = bed.s3.get_object().bucket(BUCKET).key(key).send().await.expect("get");
    let sha = out.metadata().and_then(|m| m.get("imgbake-sha256").cloned());
    (out.body.collect().await.expect("body").into_bytes().to_vec(), sha)
}

async fn open_uploads(bed: &Bed) -> usize {
    let out = bed.s3.list_multipart_uploads().bucket(BUCKET).send().await.expect("list uploads");
    out.uploads().len()
}

#[tokio::test]
async fn small_upload_is_one_put_with_sha256_metadata_and_round_trips() {
    within(async {
        let bed = bed().await;
        let client = client(&bed);
        assert_eq!(
            client.describe(),
            format!("s3 store `bucket` (s3://{BUCKET}/ci, endpoint {})", bed.moto.endpoint())
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(3 << 20, 11);
        let object = client.upload("base/base.box", &file(dir.path(), "b", &bytes), &NoProgress).await.expect("up");
        assert_eq!(object.sha256, sha256_hex(&bytes));
        assert_eq!(object.url, format!("{}/{BUCKET}/ci/base/base.box", bed.moto.endpoint()));
        let (body, sha) = stored(&bed, "ci/base/base.box").await;
        assert_eq!(body, bytes);
        assert_eq!(sha.as_deref(), Some(object.sha256.as_str()));
        assert!(!bed.moto.log().contains("uploadId"), "no multipart for a small file");

        let info = client.head("base/base.box").await.expect("head").expect("exists");
        assert_eq!((info.size, info.sha256), (bytes.len() as u64, Some(object.sha256.clone())));

        let dest = dir.path().join("out/base.box");
        let got = client.download("base/base.box", &dest, None, &NoProgress).await.expect("download");
        assert_eq!(got, object);
        assert_eq!(std::fs::read(&dest).expect("dest"), bytes);
        assert_eq!(listing(&dir.path().join("out")), ["base.box"]);
    })
    .await;
}

#[tokio::test]
async fn large_upload_goes_multipart_and_resumes_on_download() {
    within(async {
        let bed = bed().await;
        let client = client(&bed);
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(12 << 20, 12);
        let progress_calls = std::sync::atomic::AtomicUsize::new(0);
        let progress = |_: u64, _: Option<u64>| {
            progress_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let object = client.upload("big/disk.img", &file(dir.path(), "d", &bytes), &progress).await.expect("up");
        assert!(progress_calls.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        let log = bed.moto.log();
        for part in 1..=3 {
            assert!(log.contains(&format!("partNumber={part}")), "part {part} in moto's log:\n{log}");
        }
        assert!(!log.contains("partNumber=4"));
        assert_eq!(open_uploads(&bed).await, 0);
        let (body, sha) = stored(&bed, "ci/big/disk.img").await;
        assert_eq!(body, bytes);
        assert_eq!(sha, Some(object.sha256.clone()));

        // Resume from a third of it.
        let dest = dir.path().join("disk.img");
        std::fs::write(dir.path().join("disk.img.partial"), &bytes[..4 << 20]).expect("partial");
        let got = client.download("big/disk.img", &dest, Some(&object.sha256), &NoProgress).await.expect("resume");
        assert_eq!(got.sha256, object.sha256);
        assert_eq!(std::fs::read(&dest).expect("dest"), bytes);
        assert_eq!(listing(dir.path()), ["d", "disk.img"]);
    })
    .await;
}

#[tokio::test]
async fn an_object_that_does_not_match_its_recorded_sha256_is_rejected() {
    within(async {
        let bed = bed().await;
        let client = client(&bed);
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(1 << 20, 13);
        let object = client.upload("c/disk.img", &file(dir.path(), "d", &bytes), &NoProgress).await.expect("up");

        // Someone replaces the bytes but keeps the metadata.
        let mut corrupt = bytes.clone();
        corrupt[777] ^= 0x80;
        bed.s3
            .put_object()
            .bucket(BUCKET)
            .key("ci/c/disk.img")
            .body(ByteStream::from(corrupt.clone()))
            .metadata("imgbake-sha256", &object.sha256)
            .send()
            .await
            .expect("overwrite");
        let out = dir.path().join("out");
        let e = client.download("c/disk.img", &out.join("disk.img"), None, &NoProgress).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Checksum { .. }), "{text}");
        assert!(text.contains("recorded by the store") && text.contains(&sha256_hex(&corrupt)), "{text}");
        assert_eq!(listing(&out), Vec::<String>::new());
        let e = client.get_bytes("c/disk.img").await.unwrap_err();
        assert!(matches!(e, StoreError::Checksum { .. }), "{e}");
    })
    .await;
}

#[tokio::test]
async fn a_failed_multipart_upload_is_aborted_and_leaves_nothing() {
    within(async {
        let bed = bed().await;
        let client = client(&bed).with_tuning(Tuning { concurrency: 1, attempts: 1, ..small_parts() });
        let dir = tempfile::tempdir().expect("tempdir");
        let src = file(dir.path(), "d", &data(40 << 20, 14));
        // The file shrinks once the parts start (the first progress report comes before any
        // part is read): the parts cannot be read in full.
        let truncate = |_: u64, _: Option<u64>| {
            let _ = std::fs::OpenOptions::new().write(true).open(&src).and_then(|f| f.set_len(1 << 20));
        };
        let e = client.upload("f/disk.img", &src, &truncate).await.unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("s3 store `bucket`: upload `f/disk.img` failed: "), "{text}");
        assert!(
            text.ends_with(
                "changed during the upload (41943040 bytes when hashed, 1048576 now); nothing was published"
            ),
            "{text}"
        );
        assert_eq!(open_uploads(&bed).await, 0, "the multipart upload was aborted");
        assert_eq!(client.head("f/disk.img").await.expect("head"), None);
    })
    .await;
}

#[tokio::test]
async fn missing_objects_small_objects_and_deletes() {
    within(async {
        let bed = bed().await;
        let client = client(&bed);
        let dir = tempfile::tempdir().expect("tempdir");
        let e = client.download("nope/base.box", &dir.path().join("x"), None, &NoProgress).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().starts_with("`nope/base.box` is not in s3 store `bucket` (404"), "{e}");
        assert_eq!(listing(dir.path()), Vec::<String>::new());
        assert_eq!(client.head("nope/base.box").await.expect("head"), None);
        assert_eq!(client.get_bytes("nope/meta.json").await.expect("get"), None);

        let json = br#"{"versions":[]}"#.to_vec();
        client.put_bytes("base/metadata.json", json.clone(), "application/json").await.expect("put");
        assert_eq!(client.get_bytes("base/metadata.json").await.expect("get"), Some(json));
        client.delete("base/metadata.json").await.expect("delete");
        assert_eq!(client.head("base/metadata.json").await.expect("head"), None);

        let other = store("gone", "type = \"s3\"\nbucket = \"no-such-bucket\"");
        let gone = Client::s3_with_config(&other, &bed.sdk).expect("client");
        let e = gone.get_bytes("x").await.unwrap_err();
        assert_eq!(e.to_string(), "store `gone`: bucket `no-such-bucket` does not exist (NoSuchBucket)");
        let e = gone.download("x", &dir.path().join("x"), None, &NoProgress).await.unwrap_err();
        assert!(e.to_string().contains("does not exist (NoSuchBucket)"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn s3_without_credentials_says_so() {
    within(async {
        let bed = bed().await;
        // Like AWS_PROFILE naming a profile that does not exist: the credential chain fails.
        let no_creds = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .profile_name("imgbake-test-no-such-profile")
            .configure(&aws_config::provider_config::ProviderConfig::default().with_http_client(imgbake_testbed::http_client()))
            .build();
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new(REGION))
            .endpoint_url(bed.moto.endpoint())
            .http_client(imgbake_testbed::http_client())
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(no_creds))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let store = store("bucket", &format!("type = \"s3\"\nbucket = \"{BUCKET}\""));
        let client = Client::s3_with_config(&store, &sdk).expect("client");
        let e = tokio::time::timeout(Duration::from_secs(60), client.head("x")).await.expect("in time").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("store `bucket`: no usable AWS credentials (the credential provider was not enabled): check the AWS credentials"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    })
    .await;
}
