//! The QEMU builder against real QEMU/TCG guests booted from scripts/make-base-image.sh's image.
//! Each boot costs ~15-25 s of emulated CPU, so the chain test does the most per boot.

mod support;

use std::path::Path;
use std::time::Duration;

use imgbake_core::builder::{BuildSource, Builder, SweepFilter};
use imgbake_core::error::ErrorKind;
use imgbake_core::event::{EventKind, EventSink};
use imgbake_qemu::QemuBuilder;
use support::*;

/// base → tools → app from images/local, end to end: files, scripts, one reboot, the on-box tests;
/// each child is an overlay whose backing file is its parent; the sidecars list them back; nothing
/// is left running or half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tree_builds_as_a_chain_of_overlays() {
    let base = base_image();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("images/local"), dir.path());
    let tree = load(dir.path(), &[("base_disk", base.to_str().unwrap())]);
    let builder = QemuBuilder::new();
    let out = dir.path().join("output");

    let resolved = builder.resolve_source(&tree, tree.image("base").unwrap()).await.unwrap();
    assert!(resolved.id.starts_with("sha256:") && resolved.id.len() == 71, "{resolved:?}");

    let b = build(&builder, &tree, "base", BuildSource::Root(resolved.clone())).await;
    let base_art = b.result.unwrap_or_else(|e| panic!("base failed: {}", e.chain()));
    let t = build(&builder, &tree, "tools", BuildSource::Parent(base_art.clone())).await;
    let tools_art = t.result.unwrap_or_else(|e| panic!("tools failed: {}", e.chain()));
    let a = build(&builder, &tree, "app", BuildSource::Parent(tools_art.clone())).await;
    let app_art = a.result.unwrap_or_else(|e| panic!("app failed: {}", e.chain()));

    for (name, events) in [("base", &b.events), ("tools", &t.events), ("app", &a.events)] {
        eprintln!("{name}: {}", phase_timeline(events));
    }

    // Copy-on-write chain, as qemu-img sees it.
    let path = |a: &imgbake_core::artifact::Artifact| Path::new(&a.locations["path"]).to_path_buf();
    let base_info = qemu_img_info(&path(&base_art));
    assert_eq!(base_info["format"], "qcow2");
    assert_eq!(base_info["full-backing-filename"].as_str().unwrap(), base.canonicalize().unwrap().to_str().unwrap());
    let tools_info = qemu_img_info(&path(&tools_art));
    assert_eq!(tools_info["backing-filename"].as_str().unwrap(), base_art.id, "tools is backed by base");
    let app_info = qemu_img_info(&path(&app_art));
    assert_eq!(app_info["backing-filename"].as_str().unwrap(), tools_art.id, "app is backed by tools");
    assert_eq!(app_art.source, tools_art.id);
    assert_eq!(app_art.parent.as_deref(), Some("tools"));
    // A child stores only its own changes: far smaller than the 2 GiB virtual disk and than the base.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&path(&app_art)) < 64 << 20, "app overlay is {} bytes", size(&path(&app_art)));

    // The reboot step really rebooted (a new boot id), and the on-box tests ran and passed.
    let reboots: Vec<_> =
        t.events.events().into_iter().filter(|e| matches!(e.kind, EventKind::Rebooted { .. })).collect();
    assert_eq!(reboots.len(), 1, "tools reboots once: {reboots:?}");
    if let EventKind::Rebooted { from, to } = &reboots[0].kind {
        assert_ne!(from, to);
    }
    let (passed, failed, _) = a.report.test_totals();
    assert_eq!((passed, failed), (7, 0), "{:?}", a.report.tests);

    // Planning reads the sidecars back: one artifact per image, with the fingerprints given.
    let images: Vec<_> = tree.images().values().collect();
    let listed = builder.list_artifacts(&tree, &images).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for art in [&base_art, &tools_art, &app_art] {
        let found = listed.iter().find(|l| l.image == art.image).unwrap();
        assert_eq!(found.fingerprint, art.fingerprint);
        assert_eq!(found.locations["path"], art.locations["path"]);
    }

    // Nothing left: no QEMU of these builds, no work dirs, only artifacts and sidecars in output/.
    for id in [&b.build_id, &t.build_id, &a.build_id] {
        assert!(processes_with(&format!("imgbake:{id}:")).is_empty(), "a QEMU of build {id} still runs");
        assert!(work_dirs_of(id).is_empty(), "work dir of {id} left");
    }
    let mut expected: Vec<String> = [&base_art, &tools_art, &app_art]
        .iter()
        .flat_map(|a| [a.id.clone(), a.id.replace(".qcow2", ".json")])
        .collect();
    expected.sort();
    assert_eq!(names_in(&out), expected);
    assert!(builder.sweep(&tree, &SweepFilter::default()).await.unwrap().is_empty());

    // A parent cannot be pruned under its child; a leaf can.
    let err = builder.delete_artifact(&tree, &tools_art, &EventSink::discard()).await.unwrap_err();
    assert!(err.message.contains("backing file of"), "{}", err.message);
    builder.delete_artifact(&tree, &app_art, &EventSink::discard()).await.unwrap();
    assert!(!path(&app_art).exists());

    // The chain converts to a standalone disk for other hypervisors.
    let vdi = dir.path().join("tools.vdi");
    imgbake_qemu::disk::convert(&path(&tools_art), &vdi, "vdi").await.unwrap();
    let vdi_info = qemu_img_info(&vdi);
    assert_eq!(vdi_info["format"], "vdi");
    assert!(vdi_info.get("backing-filename").is_none());
}

/// `phase +seconds` for each phase of a build, for the log (the docs quote these numbers).
fn phase_timeline(events: &imgbake_core::event::EventLog) -> String {
    let all = events.events();
    let Some(first) = all.first().map(|e| e.at) else { return String::new() };
    let mut parts: Vec<String> = all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Phase { phase } => {
                Some(format!("{phase} @{:.1}s", (e.at - first).num_milliseconds() as f64 / 1000.0))
            }
            _ => None,
        })
        .collect();
    if let Some(last) = all.last() {
        parts.push(format!("end @{:.1}s", (last.at - first).num_milliseconds() as f64 / 1000.0));
    }
    parts.join(", ")
}

/// A disk that never boots: the build fails with a timeout naming the setting, QEMU is gone and the
/// output directory holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_without_ssh_times_out_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A blank disk: the BIOS finds nothing to boot and waits forever.
    let blank = dir.path().join("blank.raw");
    std::fs::File::create(&blank).unwrap().set_len(4 << 20).unwrap();
    std::fs::write(
        dir.path().join("tree.toml"),
        r#"
[images.dead]
builder = "qemu"
source = { disk = "blank.raw" }
communicator = { username = "root" }
qemu = { accelerator = "tcg", boot_timeout = "6s" }
[[images.dead.steps]]
shell = { inline = ["true"] }
"#,
    )
    .unwrap();
    let tree = load(dir.path(), &[]);
    let builder = QemuBuilder::new();
    let resolved = builder.resolve_source(&tree, tree.image("dead").unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let b = build(&builder, &tree, "dead", BuildSource::Root(resolved)).await;
    let err = b.result.expect_err("a disk without an OS cannot build");
    assert_eq!(err.kind, ErrorKind::Timeout, "{}", err.chain());
    assert!(err.message.contains("did not accept SSH") && err.message.contains("qemu.boot_timeout"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    // The QEMU process was journaled, and is gone.
    let created: Vec<_> = b
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ResourceCreated { kind, id, .. } if kind == "qemu.process" => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1);
    let pid: u32 = created[0].parse().unwrap();
    assert!(imgbake_qemu::process::start_time(pid).is_none() || processes_with(&b.build_id).is_empty());
    assert!(processes_with(&format!("imgbake:{}:", b.build_id)).is_empty(), "QEMU still runs");
    assert!(work_dirs_of(&b.build_id).is_empty());
    assert_eq!(names_in(&dir.path().join("output")), Vec::<String>::new());
}

/// What a killed build leaves (a half-written overlay, a disk without sidecar) is found by the sweep
/// and removed by destroy; complete artifacts are not touched.
#[tokio::test]
async fn sweep_finds_leftovers_and_spares_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.raw"), vec![0u8; 4096]).unwrap();
    std::fs::write(
        dir.path().join("tree.toml"),
        "[images.my-img]\nbuilder = \"qemu\"\nsource = { disk = \"base.raw\" }\ncommunicator = { username = \"root\" }\n",
    )
    .unwrap();
    let tree = load(dir.path(), &[]);
    let out = dir.path().join("output");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["my-img-b1.partial.qcow2", "my-img-b2.raw", "my-img-b3.qcow2", "my-img-b3.json", "other-b4.qcow2"] {
        std::fs::write(out.join(f), b"x").unwrap();
    }
    let builder = QemuBuilder::new();
    let mut found = builder.sweep(&tree, &SweepFilter::default()).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<_> = found.iter().map(|r| (r.kind.as_str(), r.extra["build_id"].as_str())).collect();
    assert_eq!(ids, vec![("file", "b1"), ("file", "b2")]);
    let only_b2 = builder.sweep(&tree, &SweepFilter { build_id: Some("b2".into()), older_than: None }).await.unwrap();
    assert_eq!(only_b2.len(), 1);
    for r in &found {
        builder.destroy(&tree, r, &EventSink::discard()).await.unwrap();
        // Removing what is already gone is success.
        builder.destroy(&tree, r, &EventSink::discard()).await.unwrap();
    }
    assert_eq!(names_in(&out), vec!["my-img-b3.json", "my-img-b3.qcow2", "other-b4.qcow2"]);
}

/// images/local/tree.toml is a valid tree (what `imgbake validate` checks).
#[test]
fn local_tree_validates() {
    let base = base_image();
    let tree = load(&repo().join("images/local"), &[("base_disk", base.to_str().unwrap())]);
    assert_eq!(tree.order(), vec!["base", "tools", "app"]);
    assert!(tree.images().values().all(|i| i.has_builder("qemu")));
}

/// `reboot = { method = "platform" }` resets the machine through QMP `system_reset` and the build
/// goes on with the new boot; `format = "qcow2"` leaves a standalone disk (the chain flattened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_reboot_and_flattened_output() {
    let base = base_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tree.toml"),
        format!(
            r#"
[images.flat]
builder = "qemu"
source = {{ disk = "{}" }}
communicator = {{ username = "root" }}
qemu = {{ format = "qcow2" }}
[[images.flat.steps]]
shell = {{ inline = ["echo kept > /root/marker", "sync"] }}
[[images.flat.steps]]
reboot = {{ method = "platform" }}
[[images.flat.steps]]
shell = {{ inline = ["test \"$(cat /root/marker)\" = kept"] }}
"#,
            base.display()
        ),
    )
    .unwrap();
    let tree = load(dir.path(), &[]);
    let builder = QemuBuilder::new();
    let resolved = builder.resolve_source(&tree, tree.image("flat").unwrap()).await.unwrap();
    let b = build(&builder, &tree, "flat", BuildSource::Root(resolved)).await;
    eprintln!("flat: {}", phase_timeline(&b.events));
    let art = b.result.unwrap_or_else(|e| panic!("flat failed: {}", e.chain()));
    let reboots = b.events.events().into_iter().filter(|e| matches!(e.kind, EventKind::Rebooted { .. })).count();
    assert_eq!(reboots, 1);
    let info = qemu_img_info(Path::new(&art.locations["path"]));
    assert_eq!(info["format"], "qcow2");
    assert!(info.get("backing-filename").is_none(), "flattened: {info}");
    assert_eq!(art.extra["format"], "qcow2");
    assert!(processes_with(&format!("imgbake:{}:", b.build_id)).is_empty());
}
