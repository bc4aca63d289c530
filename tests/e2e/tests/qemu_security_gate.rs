//! The security gate (provisioners/linux/security, docs/security-gate.md) on the local QEMU chain:
//! images/security-gate built for real (scanners → hardened) plus a deliberately weakened sibling of
//! `hardened`. Lynis, OpenSCAP (SCAP Security Guide, a rule subset) and debsecan (a feed this test
//! writes) run on both boxes; the weak image must fail the gate on the expected cases and keep no
//! artifact, the hardened one must pass with its report in the manifest.
//!
//! Needs the bed's QEMU base image and network from the guest to deb.debian.org (the scanners are
//! installed with apt-get), and trixie's SCAP Security Guide, downloaded by tests/bed/install.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::plan::{PlanOptions, plan};
use imgbake_core::provision::{CaseOutcome, TestSuiteReport};
use imgbake_core::schedule::{ImageResult, RunOptions, RunSummary, Status, run};
use imgbake_e2e::{base_image, write};

/// The builds; the nextest `qemu` group's limit (25 min) is the outer bound.
const HARD_LIMIT: Duration = Duration::from_secs(23 * 60);

/// This checkout (not `imgbake_e2e::repo()`: a target directory shared between checkouts may hold
/// that library built from another one).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

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

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// trixie's `ssg-base` and `ssg-debian` (0.1.76: the first with `ssg-debian12-ds.xml`; bookworm's
/// 0.1.65 has Debian 10 and 11 only), downloaded by tests/bed/install.sh into the bed's cache.
fn ssg_debs() -> PathBuf {
    let debs = imgbake_testbed::cache_dir().join("security-gate/ssg");
    let have = std::fs::read_dir(&debs)
        .map(|r| r.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".deb")).count())
        .unwrap_or(0);
    assert_eq!(have, 2, "ssg-base and ssg-debian in {} (run tests/bed/install.sh)", debs.display());
    debs
}

/// A tiny package `gate-demo` at VERSION, the one the test's feed says is vulnerable before 1.1.
fn demo_deb(dir: &Path, version: &str) -> PathBuf {
    let root = dir.join(format!("gate-demo-{version}"));
    write(
        &root,
        "DEBIAN/control",
        &format!(
            "Package: gate-demo\nVersion: {version}\nArchitecture: all\nMaintainer: imgbake tests <tests@imgbake.invalid>\nDescription: security gate test package\n"
        ),
    );
    write(&root, "usr/share/gate-demo/version", &format!("{version}\n"));
    let deb = dir.join(format!("gate-demo_{version}_all.deb"));
    sh(&format!("dpkg-deb --root-owner-group -Zgzip --build '{}' '{}' >/dev/null", root.display(), deb.display()));
    std::fs::remove_dir_all(&root).unwrap();
    deb
}

/// The debsecan feed (the tracker's format, uncompressed): gate-demo before 1.1 has a high-urgency,
/// remotely exploitable issue with a fix; `less` (on every Debian box) a low-urgency one the policy
/// does not enforce.
const FEED: &str = "VERSION 1
CVE-2099-0001,,gate-demo: remote code execution in the demo parser
CVE-2099-0002,,less: a low-urgency demo issue

gate-demo,0,BHRF,1.1,
less,1, L F,99:1.0,

less,less

";

/// The weakened sibling of `hardened`: same parent, same gate, the opposite of harden.sh.
fn weak_image(gate_step: &str) -> String {
    format!(
        r#"
[images.weak]
description = "scanners, deliberately weakened: the gate must refuse it"
parent = "scanners"

[[images.weak.steps]]
file = {{ source = "weak/gate-demo_1.0_all.deb", destination = "/tmp/gate-demo_1.0_all.deb" }}

[[images.weak.steps]]
shell = {{ inline = [
  "set -eu",
  "dpkg -i /tmp/gate-demo_1.0_all.deb",
  "{{ printf 'PermitRootLogin yes\nPasswordAuthentication yes\nPermitEmptyPasswords yes\n'; cat /etc/ssh/sshd_config; }} >/tmp/sshd_config && cat /tmp/sshd_config >/etc/ssh/sshd_config && sshd -t",
  "chmod 0644 /etc/shadow /etc/gshadow",
  "printf 'shared=1\n' >/etc/gate-demo.conf && chmod 0666 /etc/gate-demo.conf",
] }}

[[images.weak.steps]]
file = {{ source = "feed", destination = "/tmp/debsecan-feed" }}

[[images.weak.steps]]
name = "security gate"
timeout = "20m"
{gate_step}
"#
    )
}

fn result<'a>(s: &'a RunSummary, image: &str) -> &'a ImageResult {
    s.results.iter().find(|r| r.image == image).unwrap_or_else(|| panic!("{image}: {s:#?}"))
}

fn gate(r: &ImageResult) -> &TestSuiteReport {
    let report = r.report.as_ref().unwrap_or_else(|| panic!("{}: no provisioning report", r.image));
    report.tests.iter().find(|t| t.step == "security gate").unwrap_or_else(|| panic!("{}: {report:#?}", r.image))
}

/// (suite, name) of the cases with this outcome.
fn cases(t: &TestSuiteReport, outcome: CaseOutcome) -> Vec<(String, String)> {
    t.cases.iter().filter(|c| c.outcome == outcome).map(|c| (c.suite.clone(), c.name.clone())).collect()
}

fn has(list: &[(String, String)], suite: &str, name: &str) -> bool {
    list.iter().any(|(s, n)| s == suite && n == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_security_gate_refuses_the_weak_image_and_passes_the_hardened_one() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("images/security-gate");
    copy_dir(&repo().join("images/security-gate"), &dir);
    copy_dir(&repo().join("provisioners/linux/security"), &root.path().join("provisioners/linux/security"));
    for e in std::fs::read_dir(ssg_debs()).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join("ssg").join(e.file_name())).unwrap();
    }
    write(&dir, "feed/bookworm", FEED);
    std::fs::create_dir_all(dir.join("weak")).unwrap();
    demo_deb(&dir.join("weak"), "1.0");
    let text = std::fs::read_to_string(dir.join("tree.toml")).unwrap();
    let gate_step = text
        .lines()
        .find(|l| l.starts_with("test = { source = \"../../provisioners/linux/security\""))
        .expect("the example's gate step")
        .to_string();
    write(&dir, "tree.toml", &(text + &weak_image(&gate_step)));

    let opts = LoadOptions {
        vars: vec![
            ("base_disk".into(), base_image().display().to_string()),
            // A full Lynis audit takes many minutes under TCG, and so does `--tests` (Lynis still
            // registers each of its ~450 tests, a few processes each): only the ssh group is loaded.
            ("lynis_groups".into(), "ssh".into()),
        ],
        ..imgbake::load_options()
    };
    let tree = Tree::load(&dir.join("tree.toml"), &opts).expect("the tree is valid");
    let registry = imgbake::registry();
    let p = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.expect("plan");
    // Two guests at once on two emulated cores take as long as one after the other, and each then
    // risks its boot timeout: one build at a time.
    let opts = RunOptions { parallel: Some(1), ..RunOptions::default() };
    let (events, log) = EventSink::memory();
    let s = tokio::time::timeout(HARD_LIMIT, run(&tree, &p, &registry, opts, &events))
        .await
        .expect("the security gate builds finish within the hard limit")
        .expect("run");
    // What the gate printed, and where the time went (shown when the test fails, or with --no-capture).
    for e in log.events() {
        let (image, step) = (e.image.as_deref().unwrap_or("-"), e.step.as_deref().unwrap_or("-"));
        match e.kind {
            EventKind::Output { line, .. } if step == "security gate" => eprintln!("[{image}] {line}"),
            EventKind::StepFinished { duration, outcome, .. } => {
                eprintln!("[{image}] step {step:?}: {outcome:?} in {:.0}s", duration.as_secs_f64())
            }
            _ => {}
        }
    }
    for r in &s.results {
        eprintln!("{}: {:?} in {:?}", r.image, r.status, r.duration);
    }

    // scanners: built, the parent of both.
    assert_eq!(result(&s, "scanners").status, Status::Built, "{s:#?}");

    // weak: the gate failed on what was weakened, and nothing was kept.
    let weak = result(&s, "weak");
    assert_eq!(weak.status, Status::Failed, "{s:#?}");
    assert!(weak.artifact.is_none());
    let t = gate(weak);
    let failed = cases(t, CaseOutcome::Failed);
    eprintln!("weak: failed {failed:#?}");
    for (suite, name) in [
        ("openscap", "sshd_disable_root_login"),
        ("openscap", "sshd_disable_empty_passwords"),
        ("openscap", "file_permissions_etc_shadow"),
        ("debsecan", "CVE-2099-0001 gate-demo"),
        ("lynis", "SSH-7408"),
    ] {
        assert!(has(&failed, suite, name), "weak: {suite} {name} must fail: {t:#?}");
    }
    // What the policy does not enforce is recorded, not failed; what was not weakened passes.
    assert!(has(&cases(t, CaseOutcome::Skipped), "debsecan", "CVE-2099-0002 less"), "{t:#?}");
    assert!(has(&cases(t, CaseOutcome::Passed), "openscap", "file_permissions_etc_passwd"), "{t:#?}");
    assert!(has(&cases(t, CaseOutcome::Passed), "debsecan", "vulnerability data"), "{t:#?}");
    let out = dir.join("output");
    let kept: Vec<String> = std::fs::read_dir(&out)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!kept.iter().any(|n| n.starts_with("weak")), "no artifact of weak: {kept:?}");

    // hardened: passed all three scans; its report is in the manifest.
    let hardened = result(&s, "hardened");
    assert_eq!(hardened.status, Status::Built, "{s:#?}");
    assert!(hardened.artifact.is_some());
    let t = gate(hardened);
    assert_eq!(t.failed, 0, "{t:#?}");
    assert_eq!(t.exit_code, Some(0));
    let passed = cases(t, CaseOutcome::Passed);
    for (suite, name) in [
        ("lynis", "hardening index"),
        ("lynis", "SSH-7408"),
        ("openscap", "sshd_disable_root_login"),
        ("openscap", "sshd_disable_empty_passwords"),
        ("openscap", "file_permissions_etc_shadow"),
        ("debsecan", "vulnerability data"),
    ] {
        assert!(has(&passed, suite, name), "hardened: {suite} {name} must pass: {t:#?}");
    }
    assert!(has(&cases(t, CaseOutcome::Skipped), "debsecan", "CVE-2099-0002 less"), "{t:#?}");

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("imgbake-manifest.json")).unwrap()).unwrap();
    let entry = &manifest["images"]["hardened"]["qemu"];
    assert_eq!(entry["status"], "built", "{manifest:#}");
    let tests = entry["tests"].as_array().expect("tests in the manifest");
    assert_eq!(tests.len(), 1, "{manifest:#}");
    assert_eq!(tests[0]["step"], "security gate");
    assert_eq!(tests[0]["failed"], 0);
    assert_eq!(tests[0]["passed"], t.passed);
    let suites: std::collections::BTreeSet<&str> =
        tests[0]["cases"].as_array().unwrap().iter().filter_map(|c| c["suite"].as_str()).collect();
    assert_eq!(suites.into_iter().collect::<Vec<_>>(), ["debsecan", "lynis", "openscap"]);
    let weak_entry = &manifest["images"]["weak"]["qemu"];
    assert_eq!(weak_entry["status"], "failed", "{manifest:#}");
    assert!(weak_entry["artifact"].is_null());
    assert!(weak_entry["tests"][0]["failed"].as_u64().unwrap() >= 5, "{manifest:#}");
    eprintln!("security gate test: {:?}", started.elapsed());
}
