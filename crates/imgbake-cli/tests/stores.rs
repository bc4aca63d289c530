//! Bad input around artifact stores and boxes, through the `imgbake` command against the bed's nginx:
//! an unknown store, missing credentials, an image never published, a 404, a 403, a box whose bytes
//! do not match the recorded SHA-256, and a box for an unsupported provider. Each is one clear error
//! and exit 1; nothing is published and no machine starts (each fails before a disk is converted).

#[path = "support/watchdog.rs"]
mod watchdog;

use std::path::Path;
use std::process::Output;

use imgbake_testbed::{Nginx, NginxOptions};
use sha2::{Digest, Sha256};

const STORE_PREFIX: &str = "boxes";

async fn imgbake(dir: &Path, args: &[&str]) -> Output {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.args(args).current_dir(dir).env("NO_COLOR", "1").env_remove("BOX_USER").env_remove("BOX_PASS");
    // Downloads are cached under the test's own dir, where the test looks for what was kept.
    c.env("XDG_CACHE_HOME", dir.join("cache"));
    watchdog::watched_async(&mut c).await
}

/// Exit code and everything printed; exactly one `error:` line, no panic.
fn failure(o: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!stderr.contains("panicked") && !stdout.contains("panicked"), "{stdout}\n{stderr}");
    let text = format!("{stdout}\n{stderr}");
    let errors = text.lines().filter(|l| l.trim_start().starts_with("error:")).count();
    assert_eq!(errors, 1, "one error, said once:\n{text}");
    assert!(!text.contains("store `boxes`: store `boxes`"), "said once:\n{text}");
    (o.status.code().unwrap_or(-1), text)
}

fn tree(dir: &Path, store: &str, image: &str) {
    let disk = dir.join("base.qcow2");
    if !disk.exists() {
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("16M")
            .status()
            .expect("qemu-img")
            .success();
        assert!(ok);
    }
    std::fs::write(
        dir.join("tree.toml"),
        format!("[settings]\nname = \"{STORE_PREFIX}\"\n{store}\n[defaults]\nbuilder = \"virtualbox\"\ncommunicator = {{ username = \"root\" }}\n{image}"),
    )
    .expect("write tree");
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A record for image `base` of this tree naming `base-b1.box` with `sha`, the box put at `body`
/// (not put when `None`).
fn publish_record(nginx: &Nginx, prefix: &str, body: Option<&[u8]>, sha: &str) {
    let key = format!("{STORE_PREFIX}/base/base-b1/base-b1.box");
    let root = nginx.root().join(prefix);
    std::fs::create_dir_all(root.join("boxes/base/base-b1")).expect("dirs");
    if let Some(b) = body {
        std::fs::write(root.join(&key), b).expect("box");
    }
    let record = serde_json::json!({
        "imgbake_published": 1, "tree": STORE_PREFIX, "image": "base", "artifact": "base-b1",
        "fingerprint": "fp", "build_id": "b1", "published": "2026-12-01T00:00:00Z",
        "files": { "box": { "key": key, "sha256": sha, "size": body.map_or(0, |b| b.len()),
                            "url": format!("{}/{prefix}/{key}", nginx.url()) } }
    });
    std::fs::write(root.join("boxes/base/latest.json"), record.to_string()).expect("record");
}

fn child(store_url: &str) -> (String, String) {
    (
        format!("[stores.boxes]\ntype = \"http\"\nurl = \"{store_url}\"\n"),
        "[images.app]\nsource = { store = \"boxes\", image = \"base\" }\n".into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_box_mistakes_are_one_clear_error_and_exit_1() {
    let nginx = Nginx::start(NginxOptions {
        extra_server_config: vec!["location /forbidden/ { return 403; }".into()],
        ..Default::default()
    })
    .await
    .expect("nginx (tests/bed/install.sh)");
    let url = format!("{}/{STORE_PREFIX}", nginx.url());

    // An unknown store: refused offline with its place in the file.
    let d = tempfile::tempdir().unwrap();
    let (store, _) = child(&url);
    tree(d.path(), &store, "[images.base]\nsource = { disk = \"base.qcow2\" }\npublish = { store = \"boxs\" }\n");
    let (code, text) = failure(&imgbake(d.path(), &["validate", "tree.toml"]).await);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("boxs") && text.contains("tree.toml:") && text.contains("boxes"), "{text}");

    // Credentials named but not set: the run stops before any build; nothing reaches the store.
    let d = tempfile::tempdir().unwrap();
    let store = format!(
        "[stores.boxes]\ntype = \"http\"\nurl = \"{url}\"\nusername_env = \"BOX_USER\"\npassword_env = \"BOX_PASS\"\n"
    );
    tree(d.path(), &store, "[images.base]\nsource = { disk = \"base.qcow2\" }\npublish = { store = \"boxes\" }\n");
    let (code, text) = failure(&imgbake(d.path(), &["build", "tree.toml"]).await);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("BOX_USER"), "{text}");
    assert!(!nginx.root().join(STORE_PREFIX).exists(), "nothing was published");

    // The parent was never published to the store.
    let d = tempfile::tempdir().unwrap();
    let (store, image) = child(&url);
    tree(d.path(), &store, &image);
    let (code, text) = failure(&imgbake(d.path(), &["build", "tree.toml"]).await);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("has not been published to") && text.contains("base/latest.json"), "{text}");

    // The record names a box the store does not have: 404 with its key.
    publish_record(&nginx, STORE_PREFIX, None, &sha256(b"never uploaded"));
    let (code, text) = failure(&imgbake(d.path(), &["build", "tree.toml"]).await);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("404") && text.contains("base-b1.box"), "{text}");

    // A box whose bytes differ from the record (a flipped byte): refused, not kept in the cache.
    let body = b"a box, as uploaded".to_vec();
    let mut flipped = body.clone();
    flipped[3] ^= 0x01;
    publish_record(&nginx, STORE_PREFIX, Some(&flipped), &sha256(&body));
    let (code, text) = failure(&imgbake(d.path(), &["build", "tree.toml"]).await);
    assert_eq!(code, 1, "{text}");
    assert!(text.to_lowercase().contains("sha256") || text.to_lowercase().contains("checksum"), "{text}");
    let cached: Vec<_> = walk(d.path()).into_iter().filter(|p| std::fs::read(p).is_ok_and(|b| b == flipped)).collect();
    assert!(cached.is_empty(), "the corrupt download is not kept: {cached:?}");

    // The store refuses (403).
    let d = tempfile::tempdir().unwrap();
    let (store, image) = child(&format!("{}/forbidden", nginx.url()));
    tree(d.path(), &store, &image);
    let (code, text) = failure(&imgbake(d.path(), &["build", "tree.toml"]).await);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("403"), "{text}");

    // A box for a provider imgbake cannot start from (libvirt).
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("box");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("metadata.json"), r#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#).unwrap();
    std::fs::write(work.join("box.img"), b"not a disk").unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(d.path().join("base.box"))
        .arg("-C")
        .arg(&work)
        .args(["metadata.json", "box.img"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    tree(d.path(), "", "[images.base]\nsource = { box = \"base.box\" }\n");
    let (code, text) = failure(&imgbake(d.path(), &["build", "tree.toml"]).await);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("libvirt"), "{text}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
