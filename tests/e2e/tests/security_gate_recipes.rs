//! The security gate's recipes (provisioners/linux/security) on this host, without a machine: each
//! runs under `sh` against stand-ins for lynis, oscap, debsecan and dpkg-query that replay outputs
//! recorded in tests/e2e/fixtures/security-gate (written for these tests in the scanners' formats).
//! Checks the policy, the JUnit each recipe writes (read by imgbake's own JUnit parser), the arguments
//! the scanners get, and the debsecan feed handed over as debsecan reads it (zlib, SOURCE/SUITE).
//! The real scanners run in qemu_security_gate.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgbake_core::provision::CaseOutcome;
use imgbake_core::provision::junit::parse;
use imgbake_e2e::write;

struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("gate");
        std::fs::create_dir_all(&gate).unwrap();
        for e in std::fs::read_dir(repo().join("provisioners/linux/security")).unwrap().flatten() {
            std::fs::copy(e.path(), gate.join(e.file_name())).unwrap();
        }
        let bin = dir.path().join("bin");
        // Each stand-in appends its arguments to calls.log, one line per call.
        write(
            &bin,
            "lynis",
            r#"#!/bin/sh
echo "lynis $*" >>"$FAKE/calls.log"
while [ $# -gt 0 ]; do
    case $1 in
    --report-file) shift; cp "$FIXTURES/lynis-report.dat" "$1" ;;
    --log-file) shift; : >"$1" ;;
    esac
    shift
done
"#,
        );
        write(
            &bin,
            "oscap",
            r#"#!/bin/sh
echo "oscap $*" >>"$FAKE/calls.log"
while [ $# -gt 0 ]; do
    case $1 in --results) shift; cp "$FIXTURES/oscap-results.xml" "$1" ;; esac
    shift
done
exit 2
"#,
        );
        write(
            &bin,
            "debsecan",
            r#"#!/bin/sh
echo "debsecan $*" >>"$FAKE/calls.log"
suite=GENERIC
while [ $# -gt 0 ]; do
    case $1 in
    --source) shift; src=${1#file://} ;;
    --suite) shift; suite=$1 ;;
    esac
    shift
done
[ -n "${src:-}" ] && cp "$src$suite" "$FAKE/feed-seen"
cat "$FIXTURES/debsecan-summary.txt"
"#,
        );
        write(
            &bin,
            "dpkg-query",
            r#"#!/bin/sh
case $3 in
*Status*) echo "install ok installed" ;;
*Version*) printf '1.0-1' ;;
esac
"#,
        );
        write(&bin, "id", "#!/bin/sh\necho 0\n");
        for f in ["lynis", "oscap", "debsecan", "dpkg-query", "id"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Bed { dir }
    }

    fn gate(&self) -> PathBuf {
        self.dir.path().join("gate")
    }

    /// Run `sh ./SCRIPT` in the recipes' directory: (exit code, stdout+stderr).
    fn run(&self, script: &str, env: &[(&str, &str)]) -> (i32, String) {
        let path = format!("{}:{}", self.dir.path().join("bin").display(), std::env::var("PATH").unwrap());
        let out = Command::new("sh")
            .arg(format!("./{script}"))
            .current_dir(self.gate())
            .env("PATH", path)
            .env("FAKE", self.dir.path())
            .env("FIXTURES", repo().join("tests/e2e/fixtures/security-gate"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    /// The report's cases: (name, outcome, message).
    fn cases(&self, report: &str) -> Vec<(String, CaseOutcome, Option<String>)> {
        let xml = std::fs::read_to_string(self.gate().join(report)).unwrap();
        parse(&xml)
            .unwrap_or_else(|e| panic!("{report} is not JUnit: {e}\n{xml}"))
            .into_iter()
            .map(|c| (c.name, c.outcome, c.message))
            .collect()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default()
    }
}

/// This checkout (not `imgbake_e2e::repo()`: a target directory shared between checkouts may hold
/// that library built from another one).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn outcome(cases: &[(String, CaseOutcome, Option<String>)], name: &str) -> CaseOutcome {
    cases.iter().find(|c| c.0 == name).unwrap_or_else(|| panic!("no case {name:?} in {cases:#?}")).1
}

fn named<'a>(
    cases: &'a [(String, CaseOutcome, Option<String>)],
    start: &str,
) -> &'a (String, CaseOutcome, Option<String>) {
    cases.iter().find(|c| c.0.starts_with(start)).unwrap_or_else(|| panic!("no case {start:?}… in {cases:#?}"))
}

#[test]
fn lynis_fails_on_a_low_index_and_on_the_chosen_test_ids() {
    let bed = Bed::new();
    let (code, out) = bed.run(
        "lynis.sh",
        &[
            ("LYNIS_MIN_INDEX", "70"),
            ("LYNIS_FAIL_TESTS", "SSH-7408 auth-9286,KRNL-5820"),
            ("LYNIS_GROUPS", "ssh authentication"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    let c = bed.cases("lynis.xml");
    assert_eq!(outcome(&c, "hardening index"), CaseOutcome::Failed);
    assert!(named(&c, "hardening index").2.as_deref().unwrap().contains("58 is below 70"), "{c:#?}");
    // Both SSH-7408 suggestions are in the one case of the id; ids match whatever their case.
    assert_eq!(outcome(&c, "SSH-7408"), CaseOutcome::Failed);
    assert_eq!(outcome(&c, "auth-9286"), CaseOutcome::Failed);
    // An id of interest Lynis did not run here is recorded as skipped.
    assert_eq!(outcome(&c, "KRNL-5820"), CaseOutcome::Skipped);
    // Other findings: one case each, recorded and not enforced; details with `|` and `&` survive.
    assert_eq!(named(&c, "AUTH-9262 suggestion: Install a PAM module").1, CaseOutcome::Skipped);
    let file = named(&c, "FILE-7524 suggestion: ");
    assert_eq!(file.0, "FILE-7524 suggestion: Consider restricting file permissions (/etc/shadow & <others>)");
    assert!(!c.iter().any(|x| x.0.starts_with("SSH-7408 suggestion")), "folded into SSH-7408: {c:#?}");
    assert_eq!(c.len(), 6, "{c:#?}");
    let calls = bed.calls();
    assert!(calls.contains("lynis audit system --quick --no-colors --report-file "), "{calls}");
    assert!(calls.contains("--tests-from-group ssh authentication"), "{calls}");
}

#[test]
fn lynis_passes_when_the_policy_holds() {
    let bed = Bed::new();
    let (code, out) = bed.run("lynis.sh", &[("LYNIS_MIN_INDEX", "58"), ("LYNIS_FAIL_TESTS", "AUTH-9328")]);
    assert_eq!(code, 0, "{out}");
    let c = bed.cases("lynis.xml");
    assert_eq!(outcome(&c, "hardening index"), CaseOutcome::Passed);
    assert_eq!(outcome(&c, "AUTH-9328"), CaseOutcome::Passed, "ran without a finding");
    assert!(c.iter().all(|x| x.1 != CaseOutcome::Failed), "{c:#?}");
    // LYNIS_SKIP: a profile of the recipe's own, the given one plus skip-test lines.
    let base = write(bed.dir.path(), "base.prf", "quick=yes\n");
    let (code, out) =
        bed.run("lynis.sh", &[("LYNIS_PROFILE", base.to_str().unwrap()), ("LYNIS_SKIP", "SSH-7408:port, KRNL-5820")]);
    assert_eq!(code, 0, "{out}");
    let prf = bed.gate().join("lynis-gate.prf");
    assert!(bed.calls().contains(&format!("--profile {}", prf.display())), "{}", bed.calls());
    assert_eq!(std::fs::read_to_string(&prf).unwrap(), "quick=yes\nskip-test=SSH-7408:port\nskip-test=KRNL-5820\n");
    // With LYNIS_FAIL_WARNINGS every warning fails.
    let (code, _) = bed.run("lynis.sh", &[("LYNIS_FAIL_WARNINGS", "1")]);
    assert_eq!(code, 1);
    let c = bed.cases("lynis.xml");
    assert_eq!(named(&c, "AUTH-9286 warning").1, CaseOutcome::Failed);
    // A policy that is not a number is an error, and still a report.
    let (code, _) = bed.run("lynis.sh", &[("LYNIS_MIN_INDEX", "high")]);
    assert_eq!(code, 1);
    assert_eq!(outcome(&bed.cases("lynis.xml"), "policy"), CaseOutcome::Error);
}

#[test]
fn openscap_maps_rule_results_and_enforces_the_chosen_severities() {
    let bed = Bed::new();
    let ds = write(bed.dir.path(), "ssg-debian12-ds.xml", "<data-stream-collection/>");
    let ds = ds.to_str().unwrap();
    let env = [
        ("OSCAP_DATASTREAM", ds),
        ("OSCAP_RULES", "sshd_disable_root_login xccdf_org.ssgproject.content_rule_sshd_disable_empty_passwords"),
        ("OSCAP_FAIL_SEVERITIES", "high medium"),
    ];
    let (code, out) = bed.run("openscap.sh", &env);
    assert_eq!(code, 1, "{out}");
    let c = bed.cases("openscap.xml");
    assert_eq!(outcome(&c, "sshd_disable_root_login"), CaseOutcome::Failed);
    assert_eq!(outcome(&c, "sshd_disable_empty_passwords"), CaseOutcome::Failed);
    assert_eq!(outcome(&c, "file_permissions_etc_passwd"), CaseOutcome::Passed);
    assert_eq!(outcome(&c, "package_ntp_installed"), CaseOutcome::Skipped, "low is not enforced");
    assert_eq!(outcome(&c, "partition_for_home"), CaseOutcome::Skipped, "notapplicable");
    assert_eq!(c.len(), 5, "notselected rules are left out: {c:#?}");
    let calls = bed.calls();
    assert!(
        calls.contains(&format!(
            "oscap xccdf eval --profile xccdf_org.ssgproject.content_profile_standard --results {}/oscap-results.xml \
             --skip-validation --rule xccdf_org.ssgproject.content_rule_sshd_disable_root_login \
             --rule xccdf_org.ssgproject.content_rule_sshd_disable_empty_passwords {ds}",
            bed.gate().display()
        )),
        "{calls}"
    );

    // Only high: the medium failure is recorded, not enforced.
    let (code, _) = bed.run("openscap.sh", &[("OSCAP_DATASTREAM", ds), ("OSCAP_FAIL_SEVERITIES", "high")]);
    assert_eq!(code, 1);
    let c = bed.cases("openscap.xml");
    assert_eq!(outcome(&c, "sshd_disable_root_login"), CaseOutcome::Skipped);
    assert_eq!(outcome(&c, "sshd_disable_empty_passwords"), CaseOutcome::Failed);

    // No content for this OS: an error case that says what to do, and a report.
    let (code, _) = bed.run("openscap.sh", &[("OSCAP_DATASTREAM", "/nonexistent/ssg-debian12-ds.xml")]);
    assert_eq!(code, 1);
    let c = bed.cases("openscap.xml");
    assert_eq!(outcome(&c, "SCAP content"), CaseOutcome::Error);
    assert!(named(&c, "SCAP content").2.as_deref().unwrap().contains("OSCAP_DATASTREAM"), "{c:#?}");
}

#[test]
fn debsecan_reads_the_given_feed_and_fails_on_the_chosen_urgencies() {
    let bed = Bed::new();
    let feed = "VERSION 1\nCVE-2099-0001,,demo\n\ngate-demo,0,BHRF,1.1,\n\n\n";
    let path = write(bed.dir.path(), "feed/bookworm", feed);
    let env = [
        ("DEBSECAN_FEED", path.to_str().unwrap()),
        ("DEBSECAN_SUITE", "bookworm"),
        ("DEBSECAN_FAIL", "high medium"),
        ("DEBSECAN_ACCEPT", "CVE-2099-0003"),
    ];
    let (code, out) = bed.run("debsecan.sh", &env);
    assert_eq!(code, 1, "{out}");
    let c = bed.cases("debsecan.xml");
    assert_eq!(outcome(&c, "vulnerability data"), CaseOutcome::Passed);
    assert_eq!(outcome(&c, "CVE-2099-0001 gate-demo"), CaseOutcome::Failed);
    let msg = named(&c, "CVE-2099-0001 gate-demo").2.clone().unwrap();
    assert_eq!(msg, "gate-demo 1.0-1 (fixed, remotely exploitable, high urgency)");
    assert_eq!(outcome(&c, "CVE-2099-0002 less"), CaseOutcome::Skipped, "low is not enforced");
    assert_eq!(outcome(&c, "CVE-2099-0003 libdemo1"), CaseOutcome::Skipped, "accepted");
    assert_eq!(outcome(&c, "TEMP-0000000-ABCDEF gate-demo"), CaseOutcome::Skipped, "no urgency assigned");
    let calls = bed.calls();
    assert!(
        calls.contains("debsecan --config /dev/null --format summary --suite bookworm --source file://"),
        "{calls}"
    );
    // debsecan got the feed as it reads the tracker's: zlib data at SOURCE/SUITE.
    let out = Command::new("python3")
        .args(["-c", "import sys, zlib; sys.stdout.write(zlib.decompress(open(sys.argv[1], 'rb').read()).decode())"])
        .arg(bed.dir.path().join("feed-seen"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), feed, "{}", String::from_utf8_lossy(&out.stderr));
    // The temporary feed directory is gone.
    let source = calls.split("--source file://").nth(1).unwrap().split_whitespace().next().unwrap();
    assert!(!Path::new(source).exists(), "{source}");

    // `all` urgencies: every finding fails unless accepted.
    let (code, _) = bed.run("debsecan.sh", &[("DEBSECAN_SUITE", "bookworm"), ("DEBSECAN_FAIL", "all")]);
    assert_eq!(code, 1);
    let c = bed.cases("debsecan.xml");
    assert_eq!(c.iter().filter(|x| x.1 == CaseOutcome::Failed).count(), 4, "{c:#?}");
    assert!(!bed.calls().lines().last().unwrap().contains("--source"), "no feed: debsecan's own source");
}

#[test]
fn all_runs_every_recipe_and_merges_the_reports() {
    let bed = Bed::new();
    let ds = write(bed.dir.path(), "ds.xml", "<data-stream-collection/>");
    let (code, out) = bed.run(
        "all.sh",
        &[("OSCAP_DATASTREAM", ds.to_str().unwrap()), ("LYNIS_MIN_INDEX", "90"), ("DEBSECAN_SUITE", "bookworm")],
    );
    assert_eq!(code, 1, "{out}");
    let xml = std::fs::read_to_string(bed.gate().join("security.xml")).unwrap();
    let cases = parse(&xml).unwrap();
    let suites: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.suite.as_str()).collect();
    assert_eq!(suites.into_iter().collect::<Vec<_>>(), ["debsecan", "lynis", "openscap"], "{xml}");
    // lynis failed first, and the others still ran.
    let calls = bed.calls();
    assert_eq!(calls.lines().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(), ["lynis", "oscap", "debsecan"]);
    let (code, _) = bed.run(
        "all.sh",
        &[("SECURITY_GATE", "debsecan"), ("DEBSECAN_SUITE", "bookworm"), ("DEBSECAN_ACCEPT", "CVE-2099-0001")],
    );
    assert_eq!(code, 0);
    let cases = parse(&std::fs::read_to_string(bed.gate().join("security.xml")).unwrap()).unwrap();
    assert!(cases.iter().all(|c| c.suite == "debsecan"));
}
