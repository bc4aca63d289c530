//! Shared set-up for the QEMU builder's tests: the base image, a tree copied into a temp dir, jobs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{BuildJob, BuildSource, Builder, unwind};
use imgbake_core::cleanup::Journal;
use imgbake_core::error::BuildError;
use imgbake_core::event::{EventLog, EventSink};
use imgbake_core::provision::{ProvisionReport, StepContext, StepRunner};
use imgbake_qemu::QemuBuilder;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The cached base image from scripts/make-base-image.sh; fails with what to run when missing.
pub fn base_image() -> PathBuf {
    let out = Command::new(repo().join("scripts/make-base-image.sh"))
        .arg("--check")
        .output()
        .expect("running scripts/make-base-image.sh --check");
    assert!(
        out.status.success(),
        "the QEMU base image is not built: run tests/bed/install.sh (or scripts/make-base-image.sh) first\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Copy a directory tree (files and dirs; symlinks are not followed).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_dir(&e.path(), &dst);
        } else if t.is_file() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Load `dir/tree.toml` with `vars`.
pub fn load(dir: &Path, vars: &[(&str, &str)]) -> Arc<Tree> {
    let opts = LoadOptions {
        vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        schemas: imgbake_config::Schemas::new().with(imgbake_qemu::QemuSchema::arc()),
        ..LoadOptions::default()
    };
    match Tree::load(&dir.join("tree.toml"), &opts) {
        Ok(t) => Arc::new(t),
        Err(d) => panic!("tree does not load:\n{d}"),
    }
}

/// The result of one build, with its events.
pub struct Built {
    pub result: Result<Artifact, BuildError>,
    pub events: EventLog,
    pub build_id: String,
    pub report: ProvisionReport,
}

/// Build `image` of `tree` from `source` with the real step runner, then unwind its journal as the
/// scheduler does, asserting that cleanup itself succeeded.
pub async fn build(builder: &QemuBuilder, tree: &Arc<Tree>, image: &str, source: BuildSource) -> Built {
    let (sink, events) = EventSink::memory();
    let build_id = format!("t{}", &uuid_like()[..8]);
    let journal = Arc::new(Journal::create(&tree.state_dir(), &build_id, image).unwrap());
    let runner = Arc::new(StepRunner::new(StepContext::new(tree.clone(), image, "qemu", sink.clone())));
    let job = BuildJob {
        tree: tree.clone(),
        image: image.into(),
        build_id: build_id.clone(),
        fingerprint: format!("fp-{image}-{build_id}"),
        source,
        events: sink.for_image(image),
        journal: journal.clone(),
        provisioner: runner.clone(),
        debug: false,
        keep_on_failure: false,
        key_file: None,
    };
    let result = builder.build(job).await;
    let failed = unwind(&journal, builder, tree, &sink).await;
    assert!(failed.is_empty(), "cleanup failed: {failed:?}");
    assert!(!journal.path().exists(), "the journal {} is left after unwinding", journal.path().display());
    Built { result, events, build_id, report: runner.report() }
}

fn uuid_like() -> String {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    id.trim().replace('-', "")
}

/// `qemu-img info --output=json` of a disk.
pub fn qemu_img_info(path: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(path).output().unwrap();
    assert!(out.status.success(), "qemu-img info {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Processes whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    imgbake_qemu::process::all_pids()
        .into_iter()
        .filter(|p| *p != std::process::id())
        .filter(|p| imgbake_qemu::process::cmdline(*p).is_some_and(|a| a.iter().any(|x| x.contains(needle))))
        .filter(|p| imgbake_qemu::process::start_time(*p).is_some())
        .collect()
}

/// Temp work directories of build `build_id` still on disk.
pub fn work_dirs_of(build_id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("imgbake-qemu-")))
        .filter(|p| std::fs::read_to_string(p.join("build.json")).is_ok_and(|t| t.contains(build_id)))
        .collect()
}

/// File names in a directory (empty when it does not exist).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}
