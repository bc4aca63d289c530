//! imgbake's own publish path, read by real Vagrant: boxes uploaded to an http store (the bed's
//! nginx), the catalog kept in the same store, a rebuild seen by `vagrant box outdated` and fetched
//! (checksum checked) by `vagrant box update`; `keep` removes old boxes from the store; a publish
//! that fails half-way leaves the old record, and publishing again adds the version once.
//!
//! The artifacts are small boxes made with `tar` (publishing does not look inside); no machine
//! boots. Every Vagrant run is killed after 90 s, the whole test after 10 minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::event::EventSink;
use imgbake_testbed::{Nginx, Vagrant};
use imgbake_virtualbox::VirtualboxSchema;
use imgbake_virtualbox::publish::{is_published, publish};

fn tree(dir: &Path, store_url: &str) -> Tree {
    let disk = dir.join("base.qcow2");
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .status()
        .expect("qemu-img")
        .success();
    assert!(ok, "qemu-img create");
    std::fs::write(
        dir.join("tree.toml"),
        format!(
            r#"[settings]
name = "boxes"
[stores.boxes]
type = "http"
url = "{store_url}"
[images.base]
builder = "virtualbox"
communicator = {{ username = "root" }}
source = {{ disk = "base.qcow2" }}
publish = {{ store = "boxes", vagrant = {{ catalog = "team/base/metadata.json", name = "team/base", keep = 1 }} }}
"#
        ),
    )
    .expect("write tree");
    let opts = LoadOptions { schemas: Schemas::new().with(VirtualboxSchema::arc()), ..Default::default() };
    Tree::load(&dir.join("tree.toml"), &opts).expect("valid tree")
}

/// Build `n`'s artifact: a box (a tar with metadata.json and an info.txt naming the build).
fn artifact(dir: &Path, n: u32) -> Artifact {
    let work = dir.join(format!("box-{n}"));
    std::fs::create_dir_all(&work).expect("box dir");
    std::fs::write(work.join("metadata.json"), r#"{"provider":"virtualbox"}"#).expect("metadata");
    std::fs::write(work.join("info.txt"), format!("build-{n}")).expect("info");
    let path: PathBuf = dir.join(format!("base-b{n}.box"));
    let ok = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&path)
        .args(["-C"])
        .arg(&work)
        .args(["metadata.json", "info.txt"])
        .status()
        .expect("tar")
        .success();
    assert!(ok, "tar");
    let sha = imgbake_vagrant::box_checksum(&path).expect("checksum");
    Artifact {
        image: "base".into(),
        builder: "virtualbox".into(),
        id: format!("base-b{n}"),
        locations: BTreeMap::from([("box".to_string(), path.display().to_string())]),
        fingerprint: format!("fp-{n}"),
        source: "base.qcow2".into(),
        parent: None,
        build_id: format!("b{n}"),
        created: chrono::Utc::now(),
        extra: BTreeMap::from([("sha256.box".to_string(), sha)]),
    }
}

fn catalog(nginx: &Nginx) -> imgbake_vagrant::Catalog {
    let bytes = std::fs::read(nginx.root().join("boxes/team/base/metadata.json")).expect("catalog in the store");
    imgbake_vagrant::Catalog::parse(&bytes).expect("a catalog")
}

fn record_names(nginx: &Nginx) -> String {
    let bytes = std::fs::read(nginx.root().join("boxes/boxes/base/latest.json")).expect("record in the store");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json record");
    v["artifact"].as_str().unwrap_or_default().to_string()
}

fn installed(v: &Vagrant, version: &str) -> Option<String> {
    let info = v.home().join("boxes/team-VAGRANTSLASH-base").join(version).join("virtualbox/info.txt");
    std::fs::read_to_string(info).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_published_by_imgbake_are_added_outdated_and_updated_by_vagrant() {
    let test = async {
        let vagrant = Vagrant::new().expect("vagrant (tests/bed/install.sh)").with_timeout(Duration::from_secs(90));
        let nginx = Nginx::start_default().await.expect("nginx (tests/bed/install.sh)");
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = tree(dir.path(), &format!("{}/boxes", nginx.url()));
        let image = tree.image("base").expect("image base");
        let events = EventSink::discard();
        let catalog_url = format!("{}/boxes/team/base/metadata.json", nginx.url());

        // Build 1, published, added by a developer.
        let a1 = artifact(dir.path(), 1);
        assert_eq!(is_published(&tree, image, &a1).await.expect("ask"), Some(false));
        let said = publish(&tree, image, &a1, &events).await.expect("publish 1");
        assert!(said.iter().any(|l| l.starts_with("Vagrant box team/base ")), "{said:?}");
        assert_eq!(is_published(&tree, image, &a1).await.expect("ask"), Some(true));
        assert_eq!(record_names(&nginx), "base-b1");
        let v1 = catalog(&nginx).newest().expect("a version").version.clone();
        let out = vagrant.run(&["box", "add", "--provider", "virtualbox", &catalog_url]).await.expect("vagrant");
        assert!(out.success(), "{out}");
        assert!(out.stdout.contains("Calculating and comparing box checksum"), "{out}");
        assert_eq!(installed(&vagrant, &v1).as_deref(), Some("build-1"));

        // Build 2's publish fails at the catalog (a directory stands where it is kept): its box is
        // uploaded, but the record still names build 1, and build 2 counts as not published.
        let kept = nginx.root().join("boxes/team/base/metadata.json");
        let saved = std::fs::read(&kept).expect("catalog");
        std::fs::remove_file(&kept).expect("move the catalog away");
        std::fs::create_dir(&kept).expect("block the catalog");
        let a2 = artifact(dir.path(), 2);
        let e = publish(&tree, image, &a2, &events).await.expect_err("the catalog cannot be written");
        assert!(e.chain().contains("updating the Vagrant catalog"), "{}", e.chain());
        assert_eq!(record_names(&nginx), "base-b1", "the record is written last");
        assert_eq!(is_published(&tree, image, &a2).await.ok().flatten(), Some(false));
        std::fs::remove_dir(&kept).expect("unblock");
        std::fs::write(&kept, saved).expect("restore the catalog");

        // Published again (what the next run does for the reused artifact): one new version, the
        // old one dropped (keep = 1) with its box deleted from the store.
        publish(&tree, image, &a2, &events).await.expect("publish 2");
        assert_eq!(is_published(&tree, image, &a2).await.expect("ask"), Some(true));
        assert_eq!(record_names(&nginx), "base-b2");
        let c = catalog(&nginx);
        assert_eq!(c.versions.len(), 1, "{c:?}");
        let v2 = c.versions[0].version.clone();
        assert_ne!(v1, v2);
        assert!(
            !nginx.root().join("boxes/boxes/base/base-b1/base-b1.box").exists(),
            "the dropped version's box is deleted"
        );
        assert!(nginx.root().join("boxes/boxes/base/base-b2/base-b2.box").exists());
        // A third publish of the same artifact adds nothing.
        publish(&tree, image, &a2, &events).await.expect("publish 2 again");
        assert_eq!(catalog(&nginx).versions.len(), 1);
        assert_eq!(catalog(&nginx).versions[0].version, v2);

        // The developer sees the rebuild and fetches it.
        let out = vagrant.run(&["box", "outdated", "--global"]).await.expect("vagrant");
        assert!(out.stdout.contains(&v2) && out.stdout.contains("outdated"), "{out}");
        let out =
            vagrant.run(&["box", "update", "--box", "team/base", "--provider", "virtualbox"]).await.expect("vagrant");
        assert!(out.success(), "{out}");
        assert_eq!(installed(&vagrant, &v2).as_deref(), Some("build-2"));
    };
    tokio::time::timeout(Duration::from_secs(600), test).await.expect("test timed out");
}
