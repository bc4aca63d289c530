//! A build that could not publish fails before any machine starts: missing credentials and a store
//! refusing them are one clear error from `run`, with no resource created. Against the bed's nginx
//! (basic auth); the source is a small disk made with qemu-img, and no machine boots.

use std::sync::Arc;

use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::plan::{PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_core::schedule::{RunOptions, run};
use imgbake_testbed::{Nginx, NginxOptions};
use imgbake_virtualbox::{VirtualboxBuilder, VirtualboxSchema};

fn tree(dir: &std::path::Path, url: &str, env: &[(&str, &str)]) -> Tree {
    let disk = dir.join("base.qcow2");
    if !disk.exists() {
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("16M")
            .status()
            .unwrap()
            .success();
        assert!(ok, "qemu-img create");
    }
    std::fs::write(
        dir.join("tree.toml"),
        format!(
            "[settings]\nname = \"boxes\"\n[stores.boxes]\ntype = \"http\"\nurl = \"{url}\"\nusername_env = \"BOX_USER\"\npassword_env = \"BOX_PASS\"\n[images.base]\nbuilder = \"virtualbox\"\ncommunicator = {{ username = \"root\" }}\nsource = {{ disk = \"base.qcow2\" }}\npublish = {{ store = \"boxes\" }}\n"
        ),
    )
    .unwrap();
    let opts = LoadOptions {
        schemas: Schemas::new().with(VirtualboxSchema::arc()),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    Tree::load(&dir.join("tree.toml"), &opts).expect("valid tree")
}

async fn run_error(tree: &Tree) -> (String, usize) {
    let mut registry = Registry::new();
    registry.register(Arc::new(VirtualboxBuilder::default()));
    let (events, log) = EventSink::memory();
    let p = plan(tree, &registry, &PlanOptions::default(), &events).await.expect("plan");
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        run(tree, &p, &registry, RunOptions::default(), &events),
    )
    .await
    .expect("the check is quick");
    let e = r.expect_err("the run must refuse to start");
    let created = log.events().iter().filter(|e| matches!(e.kind, EventKind::ResourceCreated { .. })).count();
    (e.chain(), created)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_could_not_publish_stops_before_any_machine_starts() {
    let nginx = Nginx::start(NginxOptions { basic_auth: Some(("ci".into(), "right".into())), ..Default::default() })
        .await
        .expect("nginx (scripts/install-packages.sh bed)");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/boxes", nginx.url());

    // The credentials' variables are not set.
    // SAFETY: read only by this test's own calls, before and after; no other test in this binary.
    unsafe {
        std::env::remove_var("BOX_USER");
        std::env::remove_var("BOX_PASS");
    }
    let (e, created) = run_error(&tree(dir.path(), &url, &[])).await;
    assert!(e.contains("store `boxes`") && e.contains("BOX_USER"), "{e}");
    assert_eq!(created, 0, "nothing was created");

    // Set, but refused by the store.
    unsafe {
        std::env::set_var("BOX_USER", "ci");
        std::env::set_var("BOX_PASS", "wrong");
    }
    let (e, created) = run_error(&tree(dir.path(), &url, &[])).await;
    assert!(e.contains("publishes to store `boxes`, which cannot be used"), "{e}");
    assert!(e.contains("401") || e.contains("403"), "{e}");
    assert!(!e.contains("wrong"), "the password is not shown: {e}");
    assert_eq!(created, 0);
}
