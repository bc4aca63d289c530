//! The scripts shipped in `provisioners/linux/`: they parse (`sh -n` with dash and busybox), the JUnit
//! library writes reports imgbake reads (run in dash, busybox ash and bash), and patch.sh issues the apt
//! commands it documents (run against recording `apt-get`/`apt-mark` stand-ins on PATH — it must never
//! upgrade the machine running the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use imgbake_core::provision::CaseOutcome;
use imgbake_core::provision::junit;

fn provisioners() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../provisioners/linux")
}

fn shells() -> Vec<Vec<&'static str>> {
    let mut v = vec![vec!["dash"], vec!["bash", "--posix"]];
    if Path::new("/bin/busybox").exists() {
        v.push(vec!["/bin/busybox", "sh"]);
    }
    v
}

#[test]
fn every_linux_script_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(provisioners()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("sh") {
            continue;
        }
        seen += 1;
        for sh in shells() {
            let out = Command::new(sh[0]).args(&sh[1..]).arg("-n").arg(&path).output().unwrap();
            assert!(out.status.success(), "{:?} -n {}: {}", sh, path.display(), String::from_utf8_lossy(&out.stderr));
        }
    }
    assert!(seen >= 2, "patch.sh and junit.sh at least");
    // The check itself can fail.
    let out = Command::new("dash").args(["-n", "-c", "if true; then echo"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn junit_sh_reports_are_read_back_in_every_shell() {
    for sh in shells() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(provisioners().join("junit.sh"), dir.path().join("junit.sh")).unwrap();
        std::fs::write(
            dir.path().join("run.sh"),
            ". ./junit.sh\n\
             junit_begin 'web <image> & \"co\"' out.xml\n\
             check 'passes' true\n\
             check 'fails with <markup> & \"quotes\"' sh -c 'echo \"<b>bold</b> & more\"; exit 3'\n\
             check 'exit status 0 with output' sh -c 'echo fine'\n\
             skip 'later' 'needs a GPU'\n\
             junit_end\n",
        )
        .unwrap();
        let out = Command::new(sh[0]).args(&sh[1..]).arg("run.sh").current_dir(dir.path()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{sh:?}: junit_end fails when a check failed\n{stdout}");
        assert!(stdout.contains("ok - passes") && stdout.contains("not ok - fails with"), "{stdout}");
        assert!(stdout.contains("2 checks passed, 1 failed, 1 skipped"), "{stdout}");

        let xml = std::fs::read_to_string(dir.path().join("out.xml")).unwrap();
        let cases = junit::parse(&xml).unwrap_or_else(|e| panic!("{sh:?}: {e}\n{xml}"));
        assert_eq!(junit::count(&cases), (2, 1, 1), "{sh:?}");
        assert_eq!(cases[0].suite, "web <image> & \"co\"");
        assert_eq!(cases[1].name, "fails with <markup> & \"quotes\"");
        assert_eq!(cases[1].outcome, CaseOutcome::Failed);
        assert_eq!(cases[1].message.as_deref(), Some("exit status 3"));
        assert!(xml.contains("&lt;b&gt;bold&lt;/b&gt; &amp; more"), "the failing check's output is in the report");
        assert_eq!(cases[3].outcome, CaseOutcome::Skipped);
        assert_eq!(cases[3].message.as_deref(), Some("needs a GPU"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "no temp files left next to the report");
    }
}

#[test]
fn junit_sh_all_passing_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(provisioners().join("junit.sh"), dir.path().join("junit.sh")).unwrap();
    let out = Command::new("dash")
        .args(["-c", ". ./junit.sh && junit_begin s && check one true && junit_end"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let cases = junit::parse(&std::fs::read_to_string(dir.path().join("junit.xml")).unwrap()).unwrap();
    assert_eq!(junit::count(&cases), (1, 0, 0));
}

/// Run patch.sh with recording stand-ins for apt-get and apt-mark; returns (exit code, stdout, calls).
fn run_patch(env: &[(&str, &str)], apt_fails_on: Option<&str>) -> (Option<i32>, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls");
    let fail = apt_fails_on.unwrap_or("never-matches");
    for tool in ["apt-get", "apt-mark"] {
        let script = format!(
            "#!/bin/sh\necho \"{tool} DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*\" >> '{}'\ncase \"$*\" in *{fail}*) exit 100;; esac\n",
            log.display()
        );
        let p = bin.join(tool);
        std::fs::write(&p, script).unwrap();
        Command::new("chmod").arg("755").arg(&p).status().unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("sh");
    cmd.arg(provisioners().join("patch.sh"))
        .env("PATH", path)
        .env("PATCH_REBOOT_REQUIRED_FILE", dir.path().join("reboot-required"));
    for (k, v) in env {
        if *k == "REBOOT" {
            std::fs::write(dir.path().join("reboot-required"), "").unwrap();
            std::fs::write(dir.path().join("reboot-required.pkgs"), v).unwrap();
        } else {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), calls)
}

const OPTS: &str =
    "-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

#[test]
fn patch_sh_updates_upgrades_and_reports_a_needed_reboot() {
    // The tests run as root, like patch.sh under sudo.
    let (code, stdout, calls) = run_patch(&[("REBOOT", "linux-image-amd64\n")], None);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        calls,
        vec![
            format!("apt-get DEBIAN_FRONTEND=noninteractive {OPTS} update"),
            format!("apt-get DEBIAN_FRONTEND=noninteractive {OPTS} dist-upgrade"),
            format!("apt-get DEBIAN_FRONTEND=noninteractive {OPTS} autoremove --purge"),
            "apt-get DEBIAN_FRONTEND=noninteractive clean".to_string(),
        ]
    );
    assert!(stdout.contains("a reboot is required (by linux-image-amd64 )"), "{stdout}");

    let (code, stdout, calls) =
        run_patch(&[("PATCH_HOLD", "nginx openssl"), ("PATCH_AUTOREMOVE", "0"), ("PATCH_LOCK_TIMEOUT", "30")], None);
    assert_eq!(code, Some(0));
    assert_eq!(calls[0], "apt-mark DEBIAN_FRONTEND=noninteractive hold nginx");
    assert_eq!(calls[1], "apt-mark DEBIAN_FRONTEND=noninteractive hold openssl");
    assert!(calls[2].contains("DPkg::Lock::Timeout=30") && calls[2].ends_with(" update"));
    assert!(!calls.iter().any(|c| c.contains("autoremove")), "{calls:?}");
    assert!(stdout.trim_end().ends_with("patch.sh: up to date"), "{stdout}");
}

#[test]
fn patch_sh_stops_at_the_first_apt_failure() {
    let (code, _stdout, calls) = run_patch(&[], Some("dist-upgrade"));
    assert_eq!(code, Some(100));
    assert_eq!(calls.len(), 2, "update, then the failing dist-upgrade: {calls:?}");
}
