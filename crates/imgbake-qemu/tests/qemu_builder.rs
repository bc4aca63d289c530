//! The QEMU builder against real QEMU/TCG guests booted from scripts/make-base-image.sh's image.
//! Each boot costs ~15-25 s of emulated CPU. The whole local chain (backing files, the reboot, the
//! on-box tests, reuse and partial rebuilds through the scheduler) is tested once, in
//! tests/e2e/tests/qemu_local_tree.rs; these tests cover what is left.

mod support;

use std::path::Path;
use std::time::Duration;

use imgbake_core::builder::{BuildSource, Builder, SweepFilter};
use imgbake_core::error::ErrorKind;
use imgbake_core::event::{EventKind, EventSink};
use imgbake_qemu::QemuBuilder;
use support::*;

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
    let b2 = "b20261124-101500-3fa2";
    for f in [
        "my-img-b1.partial.qcow2".to_string(),
        format!("my-img-{b2}.raw"),
        "my-img-b3.qcow2".into(),
        "my-img-b3.json".into(),
        "other-b4.qcow2".into(),
        "my-img-backup.qcow2".into(),
    ] {
        std::fs::write(out.join(f), b"x").unwrap();
    }
    let builder = QemuBuilder::new();
    let mut found = builder.sweep(&tree, &SweepFilter::default()).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<_> = found.iter().map(|r| (r.kind.as_str(), r.extra["build_id"].as_str())).collect();
    assert_eq!(ids, vec![("file", "b1"), ("file", b2)], "a user's my-img-backup.qcow2 is not a leftover");
    let only_b2 = builder.sweep(&tree, &SweepFilter { build_id: Some(b2.into()), ..Default::default() }).await.unwrap();
    assert_eq!(only_b2.len(), 1);
    let running = SweepFilter { running: vec![b2.into()], ..Default::default() };
    assert_eq!(builder.sweep(&tree, &running).await.unwrap().len(), 1, "a running build's files are never swept");
    for r in &found {
        builder.destroy(&tree, r, &EventSink::discard()).await.unwrap();
        // Removing what is already gone is success.
        builder.destroy(&tree, r, &EventSink::discard()).await.unwrap();
    }
    assert_eq!(names_in(&out), vec!["my-img-b3.json", "my-img-b3.qcow2", "my-img-backup.qcow2", "other-b4.qcow2"]);
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

/// `--on-error=abort`: after a failed step the user chose to inspect the machine, so QEMU keeps
/// running (and its login key is written), until the journal is unwound (`imgbake clean`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_build_keeps_qemu_running_until_cleaned() {
    use imgbake_core::builder::{BuildJob, unwind};
    use imgbake_core::cleanup::Journal;
    use imgbake_core::provision::{BreakpointInfo, FailureChoice, Interaction, StepContext, StepFailure, StepRunner};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    struct Inspect;
    #[async_trait::async_trait]
    impl Interaction for Inspect {
        fn is_interactive(&self) -> bool {
            true
        }
        async fn breakpoint(&self, _info: BreakpointInfo) {}
        async fn on_failure(&self, _failure: &StepFailure) -> FailureChoice {
            FailureChoice::Abort
        }
    }

    let base = base_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tree.toml"),
        format!(
            "[images.broken]\nbuilder = \"qemu\"\nsource = {{ disk = \"{}\" }}\ncommunicator = {{ username = \"root\" }}\n[[images.broken.steps]]\nshell = {{ inline = [\"exit 9\"] }}\n",
            base.display()
        ),
    )
    .unwrap();
    let tree = load(dir.path(), &[]);
    let builder = QemuBuilder::new();
    let resolved = builder.resolve_source(&tree, tree.image("broken").unwrap()).await.unwrap();
    let build_id = "t-abort-1".to_string();
    let journal = Arc::new(Journal::create(&tree.state_dir(), &build_id, "broken").unwrap());
    let (sink, _log) = EventSink::memory();
    let mut cx = StepContext::new(tree.clone(), "broken", "qemu", sink.clone());
    cx.interaction = Arc::new(Inspect);
    let key = dir.path().join("keys/broken.key");
    let job = BuildJob {
        tree: tree.clone(),
        image: "broken".into(),
        build_id: build_id.clone(),
        fingerprint: "fp-abort".into(),
        source: BuildSource::Root(resolved),
        events: sink.for_image("broken"),
        journal: journal.clone(),
        provisioner: Arc::new(StepRunner::new(cx)),
        debug: false,
        keep_on_failure: true,
        key_file: Some(key.clone()),
    };
    let err = builder.build(job).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Aborted, "{}", err.chain());
    assert!(!processes_with(&format!("imgbake:{build_id}:")).is_empty(), "QEMU keeps running for inspection");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(journal.pending().iter().any(|r| r.kind == "process"), "and stays on the journal");

    let failed = unwind(&journal, &builder, &tree, &EventSink::discard()).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(processes_with(&format!("imgbake:{build_id}:")).is_empty(), "cleaning up stops it");
}

/// Does the raw form of `disk` hold `needle` anywhere (files, free blocks, the journal)?
fn raw_disk_holds(disk: &Path, needle: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(disk)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-img convert: {}", String::from_utf8_lossy(&out.stderr));
    let st = std::process::Command::new("grep").args(["-qaF", "--", needle]).arg(&raw).status().unwrap();
    st.success()
}

/// The keys a build's seed handed the guest, as the first step saw (and printed) them.
fn seed_keys(b: &Built) -> (String, String) {
    let lines: Vec<String> = b
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Output { line, .. } => Some(line),
            _ => None,
        })
        .collect();
    let private_line =
        lines.iter().find_map(|l| l.strip_prefix("host-private: ")).expect("printed host key").to_string();
    let login = lines.iter().find_map(|l| l.strip_prefix("login: ")).expect("printed login key").to_string();
    (private_line, login)
}

/// The `sanitize` phase: a step leaves the build's keys where cloud-init would (its copy of the user
/// data, /etc/ssh, root's authorized_keys) plus shell history. With `sanitize = false` the captured
/// disk holds them (the search works); by default it holds neither the host private key nor the login
/// key, and a child built from it boots and logs in with its own seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_captured_disk_holds_neither_the_builds_host_key_nor_its_login_key() {
    let base = base_image();
    let dir = tempfile::tempdir().unwrap();
    let leave_keys = r#"[[images.IMAGE.steps]]
shell = { inline = [
  "mkdir -p /var/lib/cloud/instance /root/.ssh",
  "{ ssh-keygen -y -f /run/imgbake/ssh_host_ed25519_key; cat /run/imgbake/ssh_host_ed25519_key; } > /var/lib/cloud/instance/user-data.txt",
  "cp /run/imgbake/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key",
  "ssh-keygen -y -f /run/imgbake/ssh_host_ed25519_key > /etc/ssh/ssh_host_ed25519_key.pub",
  "cat /run/imgbake/authorized_keys/root >> /root/.ssh/authorized_keys",
  "echo 'echo typed during the build' > /root/.bash_history",
  "echo \"host-private: $(sed -n 3p /run/imgbake/ssh_host_ed25519_key)\"",
  "echo \"login: $(cut -d' ' -f2 /run/imgbake/authorized_keys/root)\"",
  "sync",
] }
"#;
    std::fs::write(
        dir.path().join("tree.toml"),
        format!(
            r#"
[images.clean]
builder = "qemu"
source = {{ disk = "{base}" }}
communicator = {{ username = "root" }}
qemu = {{ format = "qcow2" }}
{clean_steps}
[images.dirty]
builder = "qemu"
source = {{ disk = "{base}" }}
communicator = {{ username = "root" }}
qemu = {{ format = "qcow2" }}
sanitize = false
{dirty_steps}
[images.child]
builder = "qemu"
parent = "clean"
communicator = {{ username = "root" }}
[[images.child.steps]]
shell = {{ inline = ["test ! -e /var/lib/cloud/instance/user-data.txt", "test ! -e /root/.bash_history", "echo child logged in"] }}
"#,
            base = base.display(),
            clean_steps = leave_keys.replace("IMAGE", "clean"),
            dirty_steps = leave_keys.replace("IMAGE", "dirty"),
        ),
    )
    .unwrap();
    let tree = load(dir.path(), &[]);
    let builder = QemuBuilder::new();

    let resolved = builder.resolve_source(&tree, tree.image("dirty").unwrap()).await.unwrap();
    let dirty = build(&builder, &tree, "dirty", BuildSource::Root(resolved)).await;
    let dirty_art = dirty.result.as_ref().unwrap_or_else(|e| panic!("dirty failed: {}", e.chain())).clone();
    let (host_line, login) = seed_keys(&dirty);
    assert!(host_line.len() > 40 && login.len() > 40, "{host_line} / {login}");
    let dirty_disk = Path::new(&dirty_art.locations["path"]);
    assert!(raw_disk_holds(dirty_disk, &host_line), "control: the unsanitized disk holds the host key");
    assert!(raw_disk_holds(dirty_disk, &login), "control: the unsanitized disk holds the login key");

    let resolved = builder.resolve_source(&tree, tree.image("clean").unwrap()).await.unwrap();
    let clean = build(&builder, &tree, "clean", BuildSource::Root(resolved)).await;
    eprintln!("clean: {}", phase_timeline(&clean.events));
    let art = clean.result.as_ref().unwrap_or_else(|e| panic!("clean failed: {}", e.chain())).clone();
    let (host_line, login) = seed_keys(&clean);
    let disk = Path::new(&art.locations["path"]);
    assert!(!raw_disk_holds(disk, &host_line), "the captured disk holds the build's host private key");
    assert!(!raw_disk_holds(disk, &login), "the captured disk holds the build's login key");
    let cleaned: Vec<String> = clean
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Info { message } if message.starts_with("sanitize:") => Some(message),
            _ => None,
        })
        .collect();
    assert!(cleaned.iter().any(|m| m.contains("/var/lib/cloud/instance/user-data.txt")), "{cleaned:?}");
    assert!(cleaned.iter().any(|m| m.contains("login key from /root/.ssh/authorized_keys")), "{cleaned:?}");

    let child = build(&builder, &tree, "child", BuildSource::Parent(art)).await;
    child.result.unwrap_or_else(|e| panic!("the child of a sanitized image failed: {}", e.chain()));
    let out: Vec<String> = child
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Output { line, .. } => Some(line),
            _ => None,
        })
        .collect();
    assert!(out.contains(&"child logged in".to_string()), "{out:?}");
}
