//! images/boxes for real: a `virtualbox` chain (base from the bed's base disk → tools from base's
//! box) run under QEMU/TCG, written as VirtualBox and libvirt boxes, verified with qemu-img,
//! uploaded to an nginx WebDAV store and added to Vagrant catalogs there; then a
//! second tree on "another agent" starts from what the first published (plan + a verified
//! download), and Debian's real Vagrant adds the published box from the catalog.

use imgbake_e2e::{base_image, repo};
use std::path::{Path, PathBuf};

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::event::{EventKind, EventLog, EventSink};
use imgbake_core::plan::{Action, PlanOptions, plan};
use imgbake_core::schedule::{RunOptions, RunSummary, Status, run};
use imgbake_testbed::{Nginx, NginxOptions, Vagrant};
use imgbake_virtualbox::format;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let name = e.file_name().to_string_lossy().into_owned();
        if ["output", "base", ".imgbake", "imgbake-manifest.json"].contains(&name.as_str()) {
            continue;
        }
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn load(path: &Path, vars: &[(&str, String)]) -> Tree {
    let opts =
        LoadOptions { vars: vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), ..imgbake::load_options() };
    Tree::load(path, &opts).unwrap_or_else(|d| panic!("{} is not valid:\n{d}", path.display()))
}

async fn build(tree: &Tree) -> (RunSummary, EventLog) {
    let registry = imgbake::registry();
    let (events, log) = EventSink::memory();
    let p = plan(tree, &registry, &PlanOptions::default(), &events).await.expect("plan");
    let s = run(tree, &p, &registry, RunOptions::default(), &events).await.expect("run");
    (s, log)
}

fn artifact(s: &RunSummary, image: &str) -> Artifact {
    s.results
        .iter()
        .find(|r| r.image == image)
        .and_then(|r| r.artifact.clone())
        .unwrap_or_else(|| panic!("{image}: {s:#?}"))
}

fn sha256(p: &Path) -> String {
    format::hash_file(p, format::Algorithm::Sha256).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtualbox_chain_writes_verified_boxes_publishes_them_and_a_child_elsewhere_starts_from_the_store() {
    // Anonymous reads, like a box repository developers pull from; the tree still sends its
    // credentials (refused credentials are the store crate's tests).
    let nginx = Nginx::start(NginxOptions::default()).await.expect("nginx (scripts/install-packages.sh bed)");
    // SAFETY: set before any thread of this test reads the environment; this binary has one test.
    unsafe {
        std::env::set_var("BOXES_USER", "ci");
        std::env::set_var("BOXES_PASSWORD", "s3cret");
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("images/boxes"), &dir.path().join("images/boxes"));
    copy_dir(&repo().join("images/local"), &dir.path().join("images/local"));
    let store_url = format!("{}/boxes", nginx.url());
    let vars = [("base_disk", base_image().display().to_string()), ("store_url", store_url.clone())];
    let tree = load(&dir.path().join("images/boxes/tree.toml"), &vars);

    // 1. The chain: base from the disk, tools from base's box (opened by imgbake).
    let (s, log) = build(&tree).await;
    assert!(s.ok(), "{s:#?}");
    let (base, tools) = (artifact(&s, "base"), artifact(&s, "tools"));
    assert_eq!(tools.source, base.id, "tools starts from base's artifact");
    // tools booted the VMDK base's box carries, and its reboot step really rebooted.
    let reboots = log
        .events()
        .into_iter()
        .filter(|e| e.image.as_deref() == Some("tools"))
        .filter(|e| matches!(e.kind, EventKind::Rebooted { .. }))
        .count();
    assert_eq!(reboots, 1);

    // 2. The artifacts: both boxes, verified again here with qemu-img, their hashes recorded.
    for a in [&base, &tools] {
        let vbox = PathBuf::from(&a.locations["box"]);
        let v = format::verify_box(&vbox).await.expect("the VirtualBox box verifies");
        assert_eq!(v.provider.as_deref(), Some("virtualbox"));
        assert_eq!(v.disks[0].info.create_type.as_deref(), Some("streamOptimized"), "{:?}", v.disks[0].info);
        let libvirt = PathBuf::from(&a.locations["libvirt"]);
        assert_eq!(
            format::verify_box(&libvirt).await.expect("the libvirt box verifies").provider.as_deref(),
            Some("libvirt")
        );
        assert_eq!(a.extra["sha256.box"], sha256(&vbox));
        assert_eq!(a.extra["sha256.libvirt"], sha256(&libvirt));
    }

    // 3. Published: every file in the store byte for byte, then the record, then the catalog.
    let root = nginx.root().join("boxes");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("boxes/tools/latest.json")).unwrap()).unwrap();
    assert_eq!(record["artifact"], tools.id);
    for (format, key) in [("box", "box"), ("libvirt", "libvirt")] {
        let stored = root.join(record["files"][format]["key"].as_str().unwrap());
        assert_eq!(sha256(&stored), tools.extra[&format!("sha256.{key}")], "{format}");
    }
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("team/tools/metadata.json")).unwrap()).unwrap();
    assert_eq!(catalog["name"], "team/tools");
    let providers = catalog["versions"][0]["providers"].as_array().unwrap();
    let names: Vec<&str> = providers.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{catalog:#}");
    assert!(names.contains(&"virtualbox") && names.contains(&"libvirt"), "{names:?}");
    let vb = providers.iter().find(|p| p["name"] == "virtualbox").unwrap();
    assert_eq!(vb["checksum_type"], "sha256");
    assert_eq!(vb["checksum"], tools.extra["sha256.box"]);
    assert!(vb["url"].as_str().unwrap().starts_with(&store_url), "{vb}");

    // 4. Nothing left behind: no journal entries, and only artifacts and sidecars in output/.
    assert!(imgbake_core::cleanup::Journal::open_all(&dir.path().join("images/boxes/.imgbake")).unwrap().is_empty());
    for e in std::fs::read_dir(dir.path().join("images/boxes/output")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(n.ends_with(".box") || n.ends_with(".json"), "left in output/: {n}");
    }

    // 5. A second run plans nothing to build.
    let registry = imgbake::registry();
    let p = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.unwrap();
    assert!(p.decisions.iter().all(|d| d.action == Action::Reuse), "{:#?}", p.decisions);

    // 6. Another agent: a tree of the same name whose image starts from what `tools` published.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("tree.toml"),
        format!(
            "[settings]\nname = \"boxes\"\n[stores.boxes]\ntype = \"http\"\nurl = \"{store_url}\"\nusername_env = \"BOXES_USER\"\npassword_env = \"BOXES_PASSWORD\"\n[images.app]\nbuilder = \"virtualbox\"\ncommunicator = {{ username = \"root\" }}\nsource = {{ store = \"boxes\", image = \"tools\" }}\nvirtualbox = {{ cache_dir = \"cache\" }}\n"
        ),
    )
    .unwrap();
    let other_tree = load(&other.path().join("tree.toml"), &[]);
    let app = other_tree.image("app").unwrap();
    let resolved = imgbake_virtualbox::source::resolve(&other_tree, app).await.expect("the store source resolves");
    assert_eq!(resolved.id, format!("sha256:{}", tools.extra["sha256.box"]));
    let (package, _, _) = imgbake_virtualbox::source::resolve_package(&other_tree, app).await.unwrap();
    let got = imgbake_virtualbox::source::fetch(
        &other_tree,
        app,
        &package,
        &other.path().join("cache"),
        &EventSink::discard(),
    )
    .await
    .expect("the published box downloads and verifies");
    assert_eq!(sha256(&got), tools.extra["sha256.box"]);
    let p = plan(&other_tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.unwrap();
    assert!(p.decisions[0].action == Action::Build, "{:#?}", p.decisions);

    // 7. A developer: real Vagrant adds the box from the catalog (checking its sha256).
    let vagrant = Vagrant::new().expect("vagrant (scripts/install-packages.sh bed)");
    let out = vagrant
        .run(&["box", "add", "--provider", "virtualbox", &format!("{store_url}/team/tools/metadata.json")])
        .await
        .unwrap();
    assert!(out.success(), "{}", out.text());
    let out = vagrant.run(&["box", "list"]).await.unwrap();
    assert!(out.text().contains("team/tools"), "{}", out.text());
    assert_eq!(s.results.iter().filter(|r| r.status == Status::Built).count(), 2);
}
