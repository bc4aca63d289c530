//! The offline quick start for real: images/local (base → tools → app) built with QEMU under TCG
//! through the planner and scheduler, the same path as `imgbake build images/local/tree.toml`.
//! One chain build, one run that must reuse everything, one that must rebuild only what changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::event::{EventKind, EventLog, EventSink};
use imgbake_core::plan::{Action, PlanOptions, plan};
use imgbake_core::schedule::{RunOptions, RunSummary, Status, run};
use imgbake_e2e::{base_image, repo, write};

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let name = e.file_name().to_string_lossy().into_owned();
        if ["output", "base", ".imgbake", "imgbake-manifest.json"].contains(&name.as_str()) {
            continue;
        }
        if src.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn qemu_img_info(p: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(p).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Local {
    dir: tempfile::TempDir,
    base: PathBuf,
}

impl Local {
    fn tree(&self) -> Tree {
        let opts = LoadOptions {
            vars: vec![("base_disk".into(), self.base.display().to_string())],
            ..imgbake::load_options()
        };
        Tree::load(&self.dir.path().join("tree.toml"), &opts).expect("images/local/tree.toml is valid")
    }

    async fn build(&self) -> (RunSummary, EventLog) {
        let tree = self.tree();
        let registry = imgbake::registry();
        let (events, log) = EventSink::memory();
        let p = plan(&tree, &registry, &PlanOptions::default(), &events).await.expect("plan");
        let s = run(&tree, &p, &registry, RunOptions::default(), &events).await.expect("run");
        (s, log)
    }
}

fn artifact(s: &RunSummary, image: &str) -> Artifact {
    s.results
        .iter()
        .find(|r| r.image == image)
        .and_then(|r| r.artifact.clone())
        .unwrap_or_else(|| panic!("{image}: {s:#?}"))
}

fn status(s: &RunSummary, image: &str) -> Status {
    s.results.iter().find(|r| r.image == image).unwrap().status
}

fn launches(log: &EventLog) -> usize {
    log.events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::ResourceCreated { kind, .. } if kind == "qemu.process"))
        .count()
}

fn path(a: &Artifact) -> PathBuf {
    PathBuf::from(&a.locations["path"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_local_tree_builds_reuses_and_rebuilds_what_changed() {
    let local = Local { dir: tempfile::tempdir().unwrap(), base: base_image() };
    copy_dir(&repo().join("images/local"), local.dir.path());

    // 1. The whole chain.
    let (s, log) = local.build().await;
    assert!(s.ok(), "{s:#?}");
    assert_eq!(launches(&log), 3);
    let (base, tools, app) = (artifact(&s, "base"), artifact(&s, "tools"), artifact(&s, "app"));
    // Copy-on-write: each disk's backing file is its parent's.
    assert_eq!(
        qemu_img_info(&path(&base))["full-backing-filename"].as_str().unwrap(),
        local.base.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(qemu_img_info(&path(&tools))["backing-filename"].as_str().unwrap(), base.id);
    assert_eq!(qemu_img_info(&path(&app))["backing-filename"].as_str().unwrap(), tools.id);
    assert_eq!(app.source, tools.id);
    assert!(std::fs::metadata(path(&app)).unwrap().len() < 64 << 20, "a child stores only its changes");
    // tools' reboot step really rebooted (a new boot identity).
    let reboots: Vec<_> = log
        .events()
        .into_iter()
        .filter(|e| e.image.as_deref() == Some("tools"))
        .filter_map(|e| match e.kind {
            EventKind::Rebooted { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(reboots.len(), 1, "{reboots:?}");
    assert_ne!(reboots[0].0, reboots[0].1);
    // app's on-box tests ran and passed; the manifest has them.
    let report = s.results.iter().find(|r| r.image == "app").unwrap().report.clone().unwrap();
    assert_eq!(report.test_totals().0, 7, "{:?}", report.tests);
    assert_eq!(report.test_totals().1, 0);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(local.dir.path().join("imgbake-manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["images"]["app"]["qemu"]["tests"][0]["passed"], 7, "{manifest:#}");
    // Nothing left behind: no journals, and only the artifacts and sidecars in output/.
    assert!(imgbake_core::cleanup::Journal::open_all(&local.dir.path().join(".imgbake")).unwrap().is_empty());
    let mut names: Vec<String> = std::fs::read_dir(local.dir.path().join("output"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> =
        [&base, &tools, &app].iter().flat_map(|a| [a.id.clone(), a.id.replace(".qcow2", ".json")]).collect();
    expected.sort();
    assert_eq!(names, expected);

    // 2. Nothing changed: everything reused, no machine started.
    let (s2, log2) = local.build().await;
    assert!(s2.ok());
    for i in ["base", "tools", "app"] {
        assert_eq!(status(&s2, i), Status::Reused, "{i}");
    }
    assert_eq!(launches(&log2), 0, "a rebuild of an unchanged tree starts no QEMU");

    // 3. A mid-tree script changes: tools and app are rebuilt, base is reused.
    write(
        local.dir.path(),
        "scripts/tools.sh",
        &(std::fs::read_to_string(local.dir.path().join("scripts/tools.sh")).unwrap() + "\n# v2\n"),
    );
    let p = plan(&local.tree(), &imgbake::registry(), &PlanOptions::default(), &EventSink::discard()).await.unwrap();
    assert_eq!(p.get("base", "qemu").unwrap().action, Action::Reuse);
    assert_eq!(p.get("tools", "qemu").unwrap().reasons, vec!["file scripts/tools.sh changed"]);
    assert_eq!(p.get("app", "qemu").unwrap().reasons, vec!["parent tools is rebuilt"]);
    let (s3, log3) = local.build().await;
    assert!(s3.ok(), "{s3:#?}");
    assert_eq!(status(&s3, "base"), Status::Reused);
    assert_eq!(status(&s3, "tools"), Status::Built);
    assert_eq!(status(&s3, "app"), Status::Built);
    assert_eq!(launches(&log3), 2);
    let (tools2, app2) = (artifact(&s3, "tools"), artifact(&s3, "app"));
    assert_eq!(qemu_img_info(&path(&tools2))["backing-filename"].as_str().unwrap(), base.id, "the reused base");
    assert_eq!(qemu_img_info(&path(&app2))["backing-filename"].as_str().unwrap(), tools2.id, "the new tools");

    // A parent cannot be deleted under its child; the chain converts to a standalone disk.
    let tree = local.tree();
    let registry = imgbake::registry();
    let qemu = registry.get("qemu").unwrap();
    let err = qemu.delete_artifact(&tree, &tools2, &EventSink::discard()).await.unwrap_err();
    assert!(err.message.contains("backing file of"), "{}", err.message);
    let vdi = local.dir.path().join("app.vdi");
    imgbake_qemu::disk::convert(&path(&app2), &vdi, "vdi").await.unwrap();
    let info = qemu_img_info(&vdi);
    assert_eq!(info["format"], "vdi");
    assert!(info.get("backing-filename").is_none());
}
