//! `imgbake clean` for virtualbox builds: what a killed build leaves in the output directory is
//! found (and only this tree's images', named like a build's); a finished artifact (with its
//! sidecar), the qemu builder's files beside it, and the user's own files never are.

use std::collections::BTreeSet;
use std::sync::Arc;

use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::builder::{Builder, SweepFilter};
use imgbake_virtualbox::{VirtualboxBuilder, VirtualboxSchema};

const BUILD: &str = "b20261201-101500-3fa2";
const OTHER: &str = "b20261130-090000-00ff";

#[tokio::test]
async fn clean_finds_what_a_killed_build_left_and_never_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.box"), b"box").unwrap();
    std::fs::write(
        dir.path().join("tree.toml"),
        "[settings]\nname = \"boxes\"\n[images.base]\nbuilder = \"virtualbox\"\ncommunicator = { username = \"root\" }\nsource = { box = \"base.box\" }\n",
    )
    .unwrap();
    let opts = LoadOptions { schemas: Schemas::new().with(VirtualboxSchema::arc()), ..Default::default() };
    let tree = Tree::load(&dir.path().join("tree.toml"), &opts).unwrap();
    let out = dir.path().join("output");
    std::fs::create_dir_all(out.join(format!(".base-{BUILD}.virtualbox.source"))).unwrap();
    let leftovers = [
        format!("base-{BUILD}.virtualbox.partial.qcow2"),
        format!("base-{BUILD}.box.partial"),
        format!("base-{BUILD}.ova"), // written, but no sidecar: the build died before the end
    ];
    let kept = [
        format!("base-{OTHER}.box"),             // a finished artifact...
        format!("base-{OTHER}.virtualbox.json"), // ...with its sidecar
        format!("base-{BUILD}.qcow2"),           // the qemu builder's
        "base-backup.box".to_string(),           // the user's
        format!("web-{BUILD}.box"),              // not an image of this tree
    ];
    for f in leftovers.iter().chain(&kept) {
        std::fs::write(out.join(f), b"x").unwrap();
    }
    let builder: Arc<dyn Builder> = Arc::new(VirtualboxBuilder::default());
    let found = builder.sweep(&tree, &SweepFilter::default()).await.unwrap();
    let names: BTreeSet<String> =
        found.iter().map(|r| std::path::Path::new(&r.id).file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut want: BTreeSet<String> = leftovers.iter().cloned().collect();
    want.insert(format!(".base-{BUILD}.virtualbox.source"));
    assert_eq!(names, want);
    assert!(
        found.iter().all(|r| r.builder == "virtualbox" && r.extra.get("build_id").map(String::as_str) == Some(BUILD)),
        "{found:?}"
    );

    // --build-id narrows it; a running build is never swept.
    let other = SweepFilter { build_id: Some(OTHER.into()), ..Default::default() };
    assert!(builder.sweep(&tree, &other).await.unwrap().is_empty());
    let running = SweepFilter { running: vec![BUILD.into()], ..Default::default() };
    assert!(builder.sweep(&tree, &running).await.unwrap().is_empty());
}
