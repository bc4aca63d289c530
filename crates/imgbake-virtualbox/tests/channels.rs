//! Release channels of boxes (issue 16) against a real http store (the bed's nginx), through core's
//! own promote API with the virtualbox builder in a registry: a publish points `candidate` (pointer
//! object in the store) and labels the artifact with its tests; `promote --to stable` is refused by
//! soak (an injected clock: no sleeping) and by `require_tests`, then writes the stable pointer and
//! the stable Vagrant catalog; the history keeps both promotions with who and when; `--rollback`
//! returns to the first (whose box the main catalog's `keep` would have deleted); `prune` keeps what
//! a channel points at; real Vagrant adds the stable catalog and gets the promoted box.
//!
//! The artifacts are small boxes made with `tar` (nothing looks inside); no machine boots. Vagrant
//! is killed after 90 s, the whole test after 10 minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::channel::{PointAction, after_build, who};
use imgbake_core::event::EventSink;
use imgbake_core::promote::{PromoteError, PromoteOptions, Refusal, promote};
use imgbake_core::provision::{ProvisionReport, TestSuiteReport};
use imgbake_core::registry::Registry;
use imgbake_testbed::{Nginx, Vagrant};
use imgbake_virtualbox::channel::Pointer;
use imgbake_virtualbox::publish::publish;
use imgbake_virtualbox::sidecar::{self, Sidecar};
use imgbake_virtualbox::{VirtualboxBuilder, VirtualboxSchema};

fn tree(dir: &Path, store_url: &str) -> Tree {
    std::fs::write(dir.join("base.qcow2"), b"").expect("source disk");
    std::fs::write(
        dir.join("tree.toml"),
        format!(
            r#"[settings]
name = "boxes"
[channels.stable]
soak = "1h"
require_tests = true
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

/// Build `n`'s artifact in the output directory, with its sidecar (what a build leaves).
fn artifact(dir: &Path, n: u32) -> Artifact {
    let out = dir.join("output");
    let work = dir.join(format!("box-{n}"));
    std::fs::create_dir_all(&work).expect("box dir");
    std::fs::create_dir_all(&out).expect("output dir");
    std::fs::write(work.join("metadata.json"), r#"{"provider":"virtualbox"}"#).expect("metadata");
    std::fs::write(work.join("info.txt"), format!("build-{n}")).expect("info");
    let path: PathBuf = out.join(format!("base-b{n}.box"));
    let ok = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&path)
        .arg("-C")
        .arg(&work)
        .args(["metadata.json", "info.txt"])
        .status()
        .expect("tar")
        .success();
    assert!(ok, "tar");
    let sha = imgbake_vagrant::box_checksum(&path).expect("checksum");
    let a = Artifact {
        image: "base".into(),
        builder: "virtualbox".into(),
        id: format!("base-b{n}"),
        locations: BTreeMap::from([("box".to_string(), path.display().to_string())]),
        fingerprint: format!("fp-{n}"),
        source: "base.qcow2".into(),
        parent: None,
        build_id: format!("b{n}"),
        // Distinct times: list_artifacts orders by creation.
        created: Utc::now() + chrono::Duration::seconds(n as i64),
        extra: BTreeMap::from([("sha256.box".to_string(), sha)]),
    };
    let side = Sidecar {
        imgbake_virtualbox_artifact: sidecar::VERSION,
        tree: "boxes".into(),
        tags: BTreeMap::new(),
        artifact: a.clone(),
    };
    sidecar::write(&out, &a.id, &side).expect("sidecar");
    a
}

fn report(passed: bool) -> ProvisionReport {
    ProvisionReport {
        steps: Vec::new(),
        tests: vec![TestSuiteReport {
            step: "tests".into(),
            passed: 3,
            failed: if passed { 0 } else { 1 },
            skipped: 0,
            cases: Vec::new(),
            report_file: None,
            exit_code: Some(if passed { 0 } else { 1 }),
        }],
    }
}

fn pointer(nginx: &Nginx, channel: &str) -> Pointer {
    let bytes = std::fs::read(nginx.root().join(format!("boxes/boxes/base/channels/{channel}.json")))
        .expect("pointer object in the store");
    serde_json::from_slice(&bytes).expect("a pointer")
}

fn catalog(nginx: &Nginx, file: &str) -> imgbake_vagrant::Catalog {
    let bytes = std::fs::read(nginx.root().join(format!("boxes/team/base/{file}"))).expect("catalog in the store");
    imgbake_vagrant::Catalog::parse(&bytes).expect("a catalog")
}

fn opts(to: &str, later: bool) -> PromoteOptions {
    PromoteOptions { to: to.into(), now: later.then(|| Utc::now() + chrono::Duration::hours(2)), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn box_channels_are_pointer_objects_and_catalogs_in_the_store() {
    let test = async {
        let nginx = Nginx::start_default().await.expect("nginx (tests/bed/install.sh)");
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = tree(dir.path(), &format!("{}/boxes", nginx.url()));
        let image = tree.image("base").expect("image base");
        let events = EventSink::discard();
        let builder = Arc::new(VirtualboxBuilder::default());
        let mut registry = Registry::new();
        registry.register(builder.clone());

        // Build 1 publishes: candidate points at it, and it is labelled with its tests.
        let a1 = artifact(dir.path(), 1);
        publish(&tree, image, &a1, &events).await.expect("publish 1");
        let said =
            after_build(&tree, builder.as_ref(), image, &a1, Some(&report(true)), &events).await.expect("candidate");
        assert!(said.iter().any(|l| l.contains("channels/candidate.json = base-b1")), "{said:?}");
        let c = pointer(&nginx, "candidate");
        assert_eq!(c.artifact, "base-b1");
        assert!(c.files["box"].url.ends_with("/boxes/boxes/base/base-b1/base-b1.box"), "{:?}", c.files);
        assert_eq!(Some(&c.files["box"].sha256), a1.extra.get("sha256.box"));
        assert!(!nginx.root().join("boxes/team/base/metadata-candidate.json").exists(), "candidate has no catalog");
        let listed =
            imgbake_core::builder::Builder::list_artifacts(builder.as_ref(), &tree, &[image]).await.expect("list");
        let l1 = listed.iter().find(|a| a.id == "base-b1").expect("listed");
        assert_eq!(l1.extra.get("tests").map(String::as_str), Some("passed: 3 passed 0 failed 0 skipped"));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(nginx.root().join("boxes/boxes/base/latest.json")).expect("record"))
                .expect("json");
        assert_eq!(record["labels"]["tests"], "passed: 3 passed 0 failed 0 skipped");

        // Too fresh for stable: one line, nothing written.
        let e = promote(&tree, &registry, "base", &opts("stable", false), &events).await.expect_err("soak");
        assert!(matches!(e, PromoteError::Refused(Refusal::NotSoaked { .. })), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("needs 1h of soak"), "{e}");
        assert!(!nginx.root().join("boxes/boxes/base/channels/stable.json").exists());

        // Two hours later it goes: pointer object and stable catalog.
        let p = promote(&tree, &registry, "base", &opts("stable", true), &events).await.expect("promote 1");
        assert_eq!(p[0].artifact.id, "base-b1");
        assert!(p[0].written.iter().any(|l| l.contains("metadata-stable.json")), "{:?}", p[0].written);
        let v1 = catalog(&nginx, "metadata.json").versions[0].clone();
        let stable = catalog(&nginx, "metadata-stable.json");
        assert_eq!(stable.name, "team/base");
        assert_eq!(stable.versions, vec![v1.clone()]);
        let s = pointer(&nginx, "stable");
        assert_eq!((s.artifact.as_str(), s.history.len()), ("base-b1", 1));
        assert_eq!(s.vagrant_catalog.as_deref(), Some("team/base/metadata-stable.json"));

        // Build 2: the main catalog keeps 1 version, but build 1's box stays (stable points at it).
        let a2 = artifact(dir.path(), 2);
        publish(&tree, image, &a2, &events).await.expect("publish 2");
        after_build(&tree, builder.as_ref(), image, &a2, Some(&report(true)), &events).await.expect("candidate 2");
        let main = catalog(&nginx, "metadata.json");
        assert_eq!(main.versions.len(), 1);
        let v2 = main.versions[0].clone();
        assert!(nginx.root().join("boxes/boxes/base/base-b1/base-b1.box").exists(), "a pointed box is not deleted");
        let p = promote(&tree, &registry, "base", &opts("stable", true), &events).await.expect("promote 2");
        assert_eq!((p[0].artifact.id.as_str(), p[0].previous.as_deref()), ("base-b2", Some("base-b1")));
        assert_eq!(catalog(&nginx, "metadata-stable.json").versions, vec![v2.clone()]);
        let views = imgbake_core::promote::channels(&tree, &registry, &[]).await.expect("channels");
        let st = views.iter().find(|v| v.state.channel == "stable").expect("stable view");
        assert_eq!(st.state.location, "store `boxes` object boxes/base/channels/stable.json");
        let h: Vec<&str> = st.state.history.iter().map(|p| p.artifact.as_str()).collect();
        assert_eq!(h, ["base-b2", "base-b1"]);
        for m in &st.state.history {
            let r = m.record.as_ref().expect("record");
            assert_eq!(
                (r.action, r.by.as_str(), r.from.as_deref()),
                (PointAction::Promote, who().as_str(), Some("candidate"))
            );
            assert!(m.at <= Utc::now() && Utc::now() - m.at < chrono::Duration::minutes(10));
        }

        // Build 3 ran no tests: require_tests refuses it.
        let a3 = artifact(dir.path(), 3);
        publish(&tree, image, &a3, &events).await.expect("publish 3");
        after_build(&tree, builder.as_ref(), image, &a3, None, &events).await.expect("candidate 3");
        let e = promote(&tree, &registry, "base", &opts("stable", true), &events).await.expect_err("no tests");
        assert!(matches!(e, PromoteError::Refused(Refusal::TestsNotPassed { .. })), "{e}");
        assert_eq!(pointer(&nginx, "stable").artifact, "base-b2");

        // Rollback: stable is build 1 again, its version (dropped from the main catalog) back in the
        // stable catalog.
        let mut o = opts("stable", false);
        o.rollback = true;
        let p = promote(&tree, &registry, "base", &o, &events).await.expect("rollback");
        assert_eq!((p[0].artifact.id.as_str(), p[0].action), ("base-b1", PointAction::Rollback));
        let s = pointer(&nginx, "stable");
        assert_eq!(s.artifact, "base-b1");
        assert_eq!(s.history[0].record.reverts.as_deref(), Some("base-b2"));
        assert_eq!(s.history.len(), 3);
        let stable = catalog(&nginx, "metadata-stable.json");
        assert_eq!(stable.versions.len(), 1);
        assert_eq!(stable.versions[0].version, v1.version);
        assert_eq!(stable.versions[0].providers[0].url, v1.providers[0].url);
        assert_eq!(stable.versions[0].providers[0].checksum, v1.providers[0].checksum);

        // Build 4; prune keeping 1: build 2 goes, build 1 (stable) and 3 (candidate's rollback) stay.
        let a4 = artifact(dir.path(), 4);
        publish(&tree, image, &a4, &events).await.expect("publish 4");
        after_build(&tree, builder.as_ref(), image, &a4, Some(&report(true)), &events).await.expect("candidate 4");
        let pr = imgbake_core::prune::prune(
            &tree,
            &registry,
            &imgbake_core::prune::PruneOptions { keep: Some(1), ..Default::default() },
            &events,
        )
        .await
        .expect("prune");
        let deleted: Vec<&str> = pr.deleted.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(deleted, ["base-b2"], "{pr:?}");
        let why = |id: &str| pr.kept.iter().find(|k| k.artifact.id == id).map(|k| k.why.clone()).unwrap_or_default();
        assert_eq!(why("base-b1"), "channel `stable` points at it");
        assert_eq!(why("base-b3"), "channel `candidate` rolls back to it");
        assert!(!dir.path().join("output/base-b2.box").exists());

        // A developer adds the stable catalog: Vagrant gets build 1's box, checksum checked.
        let vagrant = Vagrant::new().expect("vagrant (tests/bed/install.sh)").with_timeout(Duration::from_secs(90));
        let url = format!("{}/boxes/team/base/metadata-stable.json", nginx.url());
        let out = vagrant.run(&["box", "add", "--provider", "virtualbox", &url]).await.expect("vagrant");
        assert!(out.success(), "{out}");
        let info = vagrant.home().join("boxes/team-VAGRANTSLASH-base").join(&v1.version).join("virtualbox/info.txt");
        assert_eq!(std::fs::read_to_string(info).ok().as_deref(), Some("build-1"));
    };
    tokio::time::timeout(Duration::from_secs(600), test).await.expect("test timed out");
}

/// An image without a store keeps no channels: promote says so.
#[tokio::test]
async fn images_without_a_store_keep_no_channels() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("base.qcow2"), b"").expect("source disk");
    std::fs::write(
        dir.path().join("tree.toml"),
        r#"[settings]
name = "local"
[channels.stable]
[images.base]
builder = "virtualbox"
communicator = { username = "root" }
source = { disk = "base.qcow2" }
"#,
    )
    .expect("write tree");
    let opts = LoadOptions { schemas: Schemas::new().with(VirtualboxSchema::arc()), ..Default::default() };
    let tree = Tree::load(&dir.path().join("tree.toml"), &opts).expect("valid tree");
    let image = tree.image("base").expect("image");
    let builder = VirtualboxBuilder::default();
    assert!(imgbake_core::builder::Builder::channel(&builder, &tree, image, "stable").await.expect("ask").is_none());
    let mut registry = Registry::new();
    registry.register(Arc::new(builder));
    let e = promote(
        &tree,
        &registry,
        "base",
        &PromoteOptions { to: "stable".into(), ..Default::default() },
        &EventSink::discard(),
    )
    .await
    .expect_err("no channels");
    assert!(e.to_string().contains("keeps release channels"), "{e}");
}
