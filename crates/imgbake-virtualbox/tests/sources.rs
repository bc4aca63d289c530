//! Where a virtualbox chain starts, resolved and fetched as a build does it (no machine boots):
//! a box published by imgbake to an `s3` store (moto) and read back by a child on another agent,
//! a flipped byte in that store refused, a box by URL (the bed's nginx) with its sha256, and a local
//! box whose sha256 differs from the tree's. Its own test binary with a single test: the AWS
//! variables are set before any other thread exists.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::event::EventSink;
use imgbake_testbed::{Moto, Nginx};
use imgbake_virtualbox::VirtualboxSchema;
use imgbake_virtualbox::publish::publish;
use imgbake_virtualbox::source::{Package, fetch, resolve_package};

const BUCKET: &str = "imgbake-boxes";

fn sha256_of(path: &Path) -> String {
    imgbake_vagrant::box_checksum(path).expect("sha256")
}

/// A box file (publishing and fetching do not look inside).
fn a_box(dir: &Path, name: &str, marker: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("box {marker} ").repeat(40_000)).expect("box");
    path
}

fn tree(dir: &Path, moto: &str, url: &str, url_sha: &str) -> Tree {
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(dir.join("base.qcow2"))
        .arg("16M")
        .status()
        .expect("qemu-img")
        .success();
    assert!(ok);
    let text = format!(
        r#"[settings]
name = "boxes"

[stores.s3]
type = "s3"
bucket = "{BUCKET}"
prefix = "ci/images"
region = "us-east-1"
endpoint_url = "{moto}"

[defaults]
builder = "virtualbox"
communicator = {{ username = "root" }}

[images.base]
source = {{ disk = "base.qcow2" }}
publish = {{ store = "s3" }}

[images.agent2]
source = {{ store = "s3", image = "base" }}

[images.by_url]
source = {{ box = "{url}", sha256 = "{url_sha}" }}

[images.wrong_sum]
source = {{ box = "local.box", sha256 = "{zeros}" }}
"#,
        zeros = "0".repeat(64)
    );
    std::fs::write(dir.join("tree.toml"), text).expect("tree");
    let opts = LoadOptions { schemas: Schemas::new().with(VirtualboxSchema::arc()), ..Default::default() };
    Tree::load(&dir.join("tree.toml"), &opts).expect("valid tree")
}

#[test]
fn boxes_from_an_s3_store_a_url_and_a_local_file_are_verified() {
    // SAFETY: the only test of this binary sets them before starting the runtime.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        std::env::remove_var("AWS_PROFILE");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), test()).await.expect("test timed out");
    });
}

async fn test() {
    let moto = Moto::start().await.expect("moto (tests/bed/install.sh)");
    let nginx = Nginx::start_default().await.expect("nginx (tests/bed/install.sh)");
    let made = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "20", "-X", "PUT"])
        .arg(format!("{}/{BUCKET}", moto.endpoint()))
        .status()
        .expect("curl")
        .success();
    assert!(made, "create the bucket");
    let dir = tempfile::tempdir().expect("temp dir");
    let served = a_box(&nginx.root(), "served.box", "by url");
    let local = a_box(dir.path(), "local.box", "local");
    let tree = tree(dir.path(), &moto.endpoint(), &format!("{}/served.box", nginx.url()), &sha256_of(&served));
    let events = EventSink::discard();

    // Published to S3 by one agent...
    let boxed = a_box(dir.path(), "base-b1.box", "base");
    let sha = sha256_of(&boxed);
    let artifact = Artifact {
        image: "base".into(),
        builder: "virtualbox".into(),
        id: "base-b1".into(),
        locations: BTreeMap::from([("box".to_string(), boxed.display().to_string())]),
        fingerprint: "fp".into(),
        source: "base.qcow2".into(),
        parent: None,
        build_id: "b1".into(),
        created: chrono::Utc::now(),
        extra: BTreeMap::from([("sha256.box".to_string(), sha.clone())]),
    };
    let base = tree.image("base").expect("base");
    let said = publish(&tree, base, &artifact, &events).await.expect("publish to s3");
    assert!(said.iter().any(|l| l.contains("s3 store `s3`")), "{said:?}");

    // ... started from by another: the record names it, the download is verified.
    let agent2 = tree.image("agent2").expect("agent2");
    let (package, id, _) = resolve_package(&tree, agent2).await.expect("resolve from the store");
    assert_eq!(id, format!("sha256:{sha}"));
    assert!(matches!(&package, Package::Store { key, .. } if key == "boxes/base/base-b1/base-b1.box"), "{package:?}");
    let cache = dir.path().join("cache");
    let got = fetch(&tree, agent2, &package, &cache, &events).await.expect("fetch from s3");
    assert_eq!(std::fs::read(&got).expect("fetched"), std::fs::read(&boxed).expect("box"));

    // A flipped byte in the store: refused, nothing kept under the final name.
    let mut flipped = std::fs::read(&boxed).expect("box");
    flipped[7] ^= 0x01;
    let tmp = dir.path().join("flipped");
    std::fs::write(&tmp, &flipped).expect("flipped");
    let store = imgbake_store::Client::open(tree.store("s3").expect("store")).await.expect("open the store");
    store.upload("boxes/base/base-b1/base-b1.box", &tmp, &imgbake_store::NoProgress).await.expect("replace the object");
    let fresh = dir.path().join("cache2");
    let e = fetch(&tree, agent2, &package, &fresh, &events).await.expect_err("a flipped byte");
    assert!(e.chain().contains("checksum mismatch"), "{}", e.chain());
    let final_name = fresh.join(&sha).join("base-b1.box");
    assert!(!final_name.exists(), "nothing under the final name");

    // By URL with its sha256.
    let by_url = tree.image("by_url").expect("by_url");
    let (package, _, _) = resolve_package(&tree, by_url).await.expect("resolve the url");
    let got = fetch(&tree, by_url, &package, &cache, &events).await.expect("fetch the url");
    assert_eq!(std::fs::read(&got).expect("fetched"), std::fs::read(&served).expect("served"));

    // A local box whose bytes are not what the tree says.
    let wrong = tree.image("wrong_sum").expect("wrong_sum");
    let e = resolve_package(&tree, wrong).await.expect_err("sha256 differs");
    let text = e.chain();
    assert!(text.contains(&sha256_of(&local)) && text.contains("not the 0000"), "{text}");
}
