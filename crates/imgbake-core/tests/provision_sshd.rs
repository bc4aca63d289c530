//! Every step kind against the bed's real OpenSSH server (on this machine, so "remote" paths are
//! local paths we can inspect): shell, file, test (real pytest and the shell suite), local,
//! breakpoint, the shared settings (only/except, retries, timeout, pause_before, execute_command),
//! failures, network drops, and secrets.

mod provision_support;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgbake_core::builder::Provision;
use imgbake_core::communicator::Communicator;
use imgbake_core::error::ErrorKind;
use imgbake_core::event::EventKind;
use imgbake_core::provision::{CaseOutcome, FailureChoice, StepOutcome};
use imgbake_testbed::Sshd;
use provision_support::*;

async fn sshd() -> Sshd {
    Sshd::start().await.expect("starting the bed's sshd failed: run tests/bed/install.sh")
}

/// The pytest tests run pytest on the "machine", which for the bed's sshd is this one.
fn require_pytest() {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "pytest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "pytest for /usr/bin/python3 is missing (Debian python3-pytest): run tests/bed/install.sh");
}

fn repo_file(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test]
async fn shell_inline_script_scripts_env_exit_codes_and_wrappers() {
    let bed = sshd().await;
    let fx = fixture_with(
        // The image-wide wrapper: every step's command runs through it unless the step has its own.
        r#"execute_command = "env IMAGE_WRAP=image {{#if vars}}{{vars}} {{/if}}sh -c {{quote command}}""#,
        r##"
[[images.box.steps]]
name = "inline"
shell = { inline = ["echo \"greeting=$GREETING\"", "echo \"wrap=$IMAGE_WRAP\"", "false", "echo never"], env = { GREETING = "it's me" }, remote_dir = "@DIR@/remote", valid_exit_codes = [1] }

[[images.box.steps]]
name = "one script"
shell = { script = "scripts/one.sh", remote_dir = "@DIR@/remote" }

[[images.box.steps]]
shell = { scripts = ["scripts/a.sh", "scripts/b.sh"], remote_dir = "@DIR@/remote", execute_command = "env STEP_WRAP=step sh -c {{quote command}}" }

[[images.box.steps]]
shell = { inline = ["exit 3"], valid_exit_codes = [0, 3], shebang = "#!/bin/bash", remote_dir = "@DIR@/remote" }
"##,
        &[
            // No shebang: sh runs it itself.
            ("scripts/one.sh", "echo \"one: wrap=$IMAGE_WRAP\"\ntouch \"$(dirname \"$0\")/../one-ran\"\n"),
            ("scripts/a.sh", "#!/bin/sh\necho \"a: step=$STEP_WRAP image=${IMAGE_WRAP:-none}\"\n"),
            ("scripts/b.sh", "#!/bin/sh\necho b\n"),
        ],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    runner.provision(&comm, None).await.unwrap_or_else(|e| panic!("{}\n{:#?}", e.chain(), log.events()));

    assert_eq!(step_output(&log, "inline"), vec!["greeting=it's me", "wrap=image"], "`false` stops the `sh -e` script");
    assert_eq!(step_output(&log, "one script"), vec!["one: wrap=image"]);
    assert!(fx.path("one-ran").exists(), "the script ran from remote_dir");
    assert_eq!(
        step_output(&log, "shell #3"),
        vec!["a: step=step image=none", "b"],
        "scripts run in order, through the step's wrapper"
    );
    assert_eq!(finished(&log), vec![(1, "ok".into()), (2, "ok".into()), (3, "ok".into()), (4, "ok".into())]);
    let report = runner.report();
    assert_eq!(report.steps.len(), 4);
    assert!(report.steps.iter().all(|s| s.outcome == StepOutcome::Ok && s.attempts == 1 && s.kind == "shell"));
    assert_eq!(leftovers(&fx.path("remote"), "imgbake-"), Vec::<String>::new(), "uploaded scripts are removed");
    comm.disconnect().await;
}

#[tokio::test]
async fn a_failing_script_stops_the_build_with_its_exit_code_and_is_removed() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
shell = { inline = ["echo before", "exit 7"], remote_dir = "@DIR@/remote" }

[[images.box.steps]]
shell = { inline = ["touch @DIR@/must-not-run"] }
"#,
        &[],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Step);
    assert!(err.message.contains("shell #1") && err.message.contains("exited with code 7"), "{}", err.message);
    assert!(err.span.is_some(), "the error points at the step in tree.toml");
    assert_eq!(output(&log), vec!["before"]);
    assert!(!fx.path("must-not-run").exists());
    let report = runner.report();
    assert_eq!(report.steps.len(), 1, "steps after the failure did not run");
    assert_eq!(report.steps[0].outcome, StepOutcome::Failed);
    assert!(report.steps[0].error.as_deref().unwrap().contains("exited with code 7"));
    assert_eq!(finished(&log), vec![(1, "failed".into())]);
    assert_eq!(leftovers(&fx.path("remote"), "imgbake-"), Vec::<String>::new());
}

#[tokio::test]
async fn a_step_timeout_stops_the_remote_command() {
    let bed = sshd().await;
    // A sleep nobody else runs, to look for it afterwards.
    let marker = format!("sleep 7{}", std::process::id());
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
timeout = "1s"
shell = {{ inline = ["echo started", "exec {marker}"], remote_dir = "@DIR@/remote" }}
"#
        ),
        &[],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let t = Instant::now();
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{}", err.chain());
    assert!(err.message.contains("timed out after 1s"), "{}", err.message);
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    assert_eq!(output(&log), vec!["started"]);
    // The remote `sleep` was stopped (the server signals the command's process group).
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.lines().any(|l| l.trim() == marker), "still running:\n{ps}");
}

#[tokio::test]
async fn a_missing_script_is_a_clear_local_error() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
shell = { script = "scripts/gone.sh" }
"#,
        &[("scripts/gone.sh", "echo hi\n")],
    );
    // It existed when the tree was checked, and went away before the build ran it.
    std::fs::remove_file(fx.path("scripts/gone.sh")).unwrap();
    let comm = communicator(&bed);
    let (runner, _log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Local);
    assert!(err.message.contains("gone.sh") && err.message.contains("No such file"), "{}", err.message);
    assert!(err.message.contains("tree.toml:"), "names where the script is configured: {}", err.message);
}

#[tokio::test]
async fn retries_run_a_failing_step_again_with_backoff() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
retries = 2
shell = { inline = ["n=$(cat @DIR@/count 2>/dev/null || echo 0)", "n=$((n+1))", "echo $n > @DIR@/count", "echo attempt $n", "[ $n -ge 3 ]"], remote_dir = "@DIR@/remote" }
"#,
        &[],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    runner.provision(&comm, None).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert_eq!(output(&log), vec!["attempt 1", "attempt 2", "attempt 3"]);
    let w = warnings(&log);
    assert!(w[0].starts_with("attempt 1 of 3 failed") && w[1].starts_with("attempt 2 of 3 failed"), "{w:?}");
    assert_eq!(runner.report().steps[0].attempts, 3);
    assert_eq!(runner.report().steps[0].outcome, StepOutcome::Ok);
}

#[tokio::test]
async fn file_uploads_downloads_directories_and_content_with_modes() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
file = { source = "files/app.conf", destination = "@DIR@/remote/etc/app.conf" }

[[images.box.steps]]
file = { source = "files/site", destination = "@DIR@/remote/srv/" }

[[images.box.steps]]
file = { content = "token=abc\n", destination = "@DIR@/remote/etc/token", mode = "0600" }

[[images.box.steps]]
file = { source = "@DIR@/remote/srv/site", destination = "fetched/", direction = "download" }

[[images.box.steps]]
file = { source = "@DIR@/remote/etc/app.conf", destination = "fetched/app.conf", direction = "download" }
"#,
        &[
            ("files/app.conf", "listen 80\n"),
            ("files/site/index.html", "<h1>hi</h1>\n"),
            ("files/site/css/a.css", "a{}\n"),
        ],
    );
    std::fs::set_permissions(fx.path("files/app.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    runner.provision(&comm, None).await.unwrap_or_else(|e| panic!("{}\n{:#?}", e.chain(), log.events()));

    let mode = |p: &str| std::fs::metadata(fx.path(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(std::fs::read_to_string(fx.path("remote/etc/app.conf")).unwrap(), "listen 80\n");
    assert_eq!(mode("remote/etc/app.conf"), 0o640, "the mode travels with the file");
    assert_eq!(
        std::fs::read_to_string(fx.path("remote/srv/site/css/a.css")).unwrap(),
        "a{}\n",
        "`dir/` keeps the source's name"
    );
    assert_eq!(std::fs::read_to_string(fx.path("remote/etc/token")).unwrap(), "token=abc\n");
    assert_eq!(mode("remote/etc/token"), 0o600);
    assert_eq!(std::fs::read_to_string(fx.path("fetched/site/index.html")).unwrap(), "<h1>hi</h1>\n");
    assert_eq!(std::fs::read_to_string(fx.path("fetched/app.conf")).unwrap(), "listen 80\n");
    assert_eq!(mode("fetched/app.conf"), 0o640);
    assert_eq!(finished(&log).len(), 5);
}

fn pytest_suite(failing: bool) -> Vec<(&'static str, String)> {
    let assertion = if failing {
        "assert os.path.exists('/nonexistent/imgbake'), 'no /nonexistent/imgbake on this image'"
    } else {
        "assert True"
    };
    vec![(
        "tests/test_box.py",
        format!(
            "import os, pytest\n\n\
                 def test_has_sh():\n    assert os.path.exists('/bin/sh')\n\n\
                 def test_env():\n    assert os.environ['ROLE'] == 'web'\n\n\
                 def test_maybe_broken():\n    {assertion}\n\n\
                 @pytest.mark.skip(reason='not on this image')\n\
                 def test_later():\n    pass\n"
        ),
    )]
}

#[tokio::test]
async fn a_real_pytest_suite_passes_and_its_junit_report_is_parsed() {
    require_pytest();
    let bed = sshd().await;
    let files = pytest_suite(false);
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "pytest"
test = { source = "tests", destination = "@DIR@/remote/tests", command = "/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml=report.xml", report = "report.xml", env = { ROLE = "web" } }
"#,
        &files,
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    runner.provision(&comm, None).await.unwrap_or_else(|e| panic!("{}\n{:?}", e.chain(), output(&log)));
    let report = runner.report();
    let suite = &report.tests[0];
    assert_eq!((suite.step.as_str(), suite.passed, suite.failed, suite.skipped), ("pytest", 3, 0, 1));
    assert_eq!(suite.exit_code, Some(0));
    assert!(suite.cases.iter().any(|c| c.name == "test_later" && c.outcome == CaseOutcome::Skipped));
    let file = suite.report_file.clone().expect("the report is kept");
    assert!(
        file.starts_with(fx.path("reports")) && std::fs::read_to_string(&file).unwrap().contains("<testsuite"),
        "{file:?}"
    );
    assert!(
        log.events().iter().any(|e| matches!(e.kind, EventKind::TestResults { passed: 3, failed: 0, skipped: 1 })),
        "a test_results event"
    );
    assert!(infos(&log).iter().any(|m| m.starts_with("tests: 3 passed, 0 failed, 1 skipped")), "{:?}", infos(&log));
    assert!(!fx.path("remote/tests").exists(), "the tests are removed without keep");
}

#[tokio::test]
async fn a_failing_test_case_fails_the_build_and_the_report_is_kept() {
    require_pytest();
    let bed = sshd().await;
    let files = pytest_suite(true);
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let fx = fixture(
        r#"
[[images.box.steps]]
test = { source = "tests", destination = "@DIR@/remote/tests", command = "/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml=out/report.xml", report = "out/report.xml", env = { ROLE = "web" }, keep = true }

[[images.box.steps]]
shell = { inline = ["touch @DIR@/must-not-run"] }
"#,
        &files,
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Test, "{}", err.chain());
    assert!(err.message.contains("1 test case(s) failed"), "{}", err.message);
    assert!(!fx.path("must-not-run").exists());
    let report = runner.report();
    let suite = &report.tests[0];
    assert_eq!((suite.passed, suite.failed, suite.skipped), (2, 1, 1));
    assert_eq!(suite.exit_code, Some(1), "pytest exits 1 when a test fails");
    let failed = suite.cases.iter().find(|c| c.outcome == CaseOutcome::Failed).unwrap();
    assert_eq!(failed.name, "test_maybe_broken");
    assert!(failed.message.as_deref().unwrap().contains("no /nonexistent/imgbake on this image"), "{failed:?}");
    assert!(suite.report_file.as_ref().unwrap().exists());
    assert!(
        warnings(&log).iter().any(|w| w.starts_with("test failed: test_box::test_maybe_broken")),
        "{:?}",
        warnings(&log)
    );
    assert!(fx.path("remote/tests/test_box.py").exists(), "keep = true leaves the tests on the machine");
    assert_eq!(report.steps[0].outcome, StepOutcome::Failed);
    // The manifest gets all of it.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["tests"][0]["failed"], 1);
    assert_eq!(json["steps"][0]["outcome"], "failed");
}

#[tokio::test]
async fn a_shell_based_suite_writes_junit_that_is_parsed() {
    let bed = sshd().await;
    let junit = repo_file("provisioners/linux/junit.sh");
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "shell suite"
test = { source = "suite", destination = "@DIR@/remote/suite", command = "sh ./run.sh", report = "junit.xml" }
"#,
        &[
            ("suite/junit.sh", &junit),
            (
                "suite/run.sh",
                "set -e\n. ./junit.sh\njunit_begin box junit.xml\ncheck 'sh exists' test -x /bin/sh\n\
                 check 'tmp is writable' sh -c 'touch /tmp/.imgbake-probe-$$ && rm /tmp/.imgbake-probe-$$'\n\
                 skip 'gpu' 'no GPU here'\njunit_end\n",
            ),
        ],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    runner.provision(&comm, None).await.unwrap_or_else(|e| panic!("{}\n{:?}", e.chain(), output(&log)));
    let suite = &runner.report().tests[0];
    assert_eq!((suite.passed, suite.failed, suite.skipped), (2, 0, 1));
    assert_eq!(suite.cases[0].suite, "box");
    assert_eq!(suite.cases[0].name, "sh exists");
    assert!(step_output(&log, "shell suite").contains(&"ok - sh exists".to_string()));
}

#[tokio::test]
async fn a_failing_shell_suite_fails_with_its_check_output_in_the_report() {
    let bed = sshd().await;
    let junit = repo_file("provisioners/linux/junit.sh");
    let fx = fixture(
        r#"
[[images.box.steps]]
test = { source = "suite", destination = "@DIR@/remote/suite", command = "sh ./run.sh", report = "junit.xml" }
"#,
        &[
            ("suite/junit.sh", &junit),
            (
                "suite/run.sh",
                ". ./junit.sh\njunit_begin box junit.xml\ncheck 'nginx installed' sh -c 'echo nginx: not found >&2; exit 127'\njunit_end\n",
            ),
        ],
    );
    let comm = communicator(&bed);
    let (runner, _log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Test);
    let suite = &runner.report().tests[0];
    assert_eq!((suite.passed, suite.failed), (0, 1));
    assert_eq!(suite.cases[0].message.as_deref(), Some("exit status 127"));
    assert!(std::fs::read_to_string(suite.report_file.as_ref().unwrap()).unwrap().contains("nginx: not found"));
}

#[tokio::test]
async fn a_test_command_that_writes_no_report_fails() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
test = { command = "echo no tests here; exit 4", destination = "@DIR@/remote/t", report = "report.xml" }
"#,
        &[],
    );
    let comm = communicator(&bed);
    let (runner, _log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Test);
    assert!(err.message.contains("exited with 4") && err.message.contains("report.xml"), "{}", err.message);
    assert_eq!(runner.report().tests[0].exit_code, Some(4));
}

#[tokio::test]
async fn local_steps_run_here_with_the_build_values() {
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "values"
local = { command = "echo \"$IMGBAKE_IMAGE $IMGBAKE_BUILDER $IMGBAKE_BUILD_ID $EXTRA\"; pwd; echo oops >&2", env = { EXTRA = "x y" } }

[[images.box.steps]]
name = "fails"
local = { command = "exit 5" }
"#,
        &[],
    );
    // No machine is needed for local steps, but provisioning connects first: use the bed.
    let bed = sshd().await;
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "qemu");
    let err = runner.provision(&comm, None).await.unwrap_err();
    let here = fx.dir.path().canonicalize().unwrap().display().to_string();
    let out = step_output(&log, "values");
    assert_eq!(out.len(), 3, "{out:?}");
    // stdout in order; stderr arrives on its own pipe.
    let stdout: Vec<&String> = out.iter().filter(|l| *l != "oops").collect();
    assert_eq!(stdout, vec!["box qemu b-0001 x y", &here]);
    assert!(out.contains(&"oops".to_string()));
    assert_eq!(err.kind, ErrorKind::Step);
    assert!(err.message.contains("fails: the local command exited with code 5"), "{}", err.message);
}

#[tokio::test]
async fn a_local_step_timeout_kills_its_whole_process_group() {
    let (a, b) = (format!("sleep 8{}", std::process::id()), format!("sleep 9{}", std::process::id()));
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
timeout = "500ms"
local = {{ command = "sh -c '{a}; echo never' & {b}" }}
"#
        ),
        &[],
    );
    let bed = sshd().await;
    let comm = communicator(&bed);
    let (runner, _log) = new_runner(&fx, "aws");
    let t = Instant::now();
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.lines().any(|l| l.trim() == a || l.trim() == b || l.contains(&a)), "left running:\n{ps}");
}

#[tokio::test]
async fn only_except_pause_before_and_breakpoints() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
only = ["qemu"]
shell = { inline = ["touch @DIR@/qemu-only"] }

[[images.box.steps]]
except = ["aws"]
shell = { inline = ["touch @DIR@/not-aws"] }

[[images.box.steps]]
pause_before = "200ms"
breakpoint = { message = "look around" }

[[images.box.steps]]
shell = { inline = ["echo last"], remote_dir = "@DIR@/remote" }
"#,
        &[],
    );
    let comm = communicator(&bed);

    // Not interactive: the breakpoint is passed, with a note.
    let (runner, log) = new_runner(&fx, "aws");
    let t = Instant::now();
    runner.provision(&comm, None).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200), "pause_before waited");
    assert!(!fx.path("qemu-only").exists() && !fx.path("not-aws").exists());
    assert_eq!(finished(&log), vec![(1, "skipped".into()), (2, "skipped".into()), (3, "ok".into()), (4, "ok".into())]);
    assert!(warnings(&log).iter().any(|w| w.contains("pause_before") && w.contains("Packer compatibility")));
    assert!(infos(&log).iter().any(|m| m.contains("breakpoint passed without pausing") && m.contains("look around")));
    let outcomes: Vec<StepOutcome> = runner.report().steps.iter().map(|s| s.outcome).collect();
    assert_eq!(outcomes, vec![StepOutcome::Skipped, StepOutcome::Skipped, StepOutcome::Ok, StepOutcome::Ok]);

    // Interactive: the person is asked, and told how to reach the machine.
    let script = Arc::new(Script { interactive: true, ..Default::default() });
    let (runner, _log) = new_runner_with(&fx, "qemu", |cx| cx.interaction = script.clone());
    runner.provision(&comm, None).await.unwrap();
    assert!(fx.path("qemu-only").exists() && fx.path("not-aws").exists());
    let bps = script.breakpoints.lock().unwrap().clone();
    assert_eq!(bps.len(), 1);
    assert_eq!((bps[0].message.as_str(), bps[0].index), ("look around", 3));
    assert_eq!(bps[0].ssh_command(), format!("ssh -p {} root@127.0.0.1", bed.port()));

    // --debug: a pause before every step that runs, with the key file named.
    let script = Arc::new(Script::default());
    let (runner, _log) = new_runner_with(&fx, "aws", |cx| {
        cx.interaction = script.clone();
        cx.debug = true;
        cx.key_file = Some("/tmp/build key".into());
    });
    runner.provision(&comm, None).await.unwrap();
    let bps = script.breakpoints.lock().unwrap().clone();
    let at: Vec<usize> = bps.iter().map(|b| b.index).collect();
    assert_eq!(at, vec![3, 3, 4], "before steps 3 and 4, and the breakpoint itself");
    assert!(bps[0].ssh_command().contains("-i '/tmp/build key'"));
}

use imgbake_testbed::SshTarget as _;

#[tokio::test]
async fn after_a_failure_the_person_chooses_retry_or_abort() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
shell = { inline = ["n=$(cat @DIR@/count 2>/dev/null || echo 0)", "echo $((n+1)) > @DIR@/count", "[ $n -ge 1 ]"], remote_dir = "@DIR@/remote" }

[[images.box.steps]]
shell = { inline = ["exit 9"], remote_dir = "@DIR@/remote" }
"#,
        &[],
    );
    let comm = communicator(&bed);
    let script = Arc::new(Script::default());
    script.choices.lock().unwrap().extend([FailureChoice::Retry, FailureChoice::Abort]);
    let (runner, _log) = new_runner_with(&fx, "aws", |cx| cx.interaction = script.clone());
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Aborted);
    assert!(
        err.message.contains("left running for inspection") && err.message.contains("exited with code 9"),
        "{}",
        err.message
    );
    let failures = script.failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 2);
    assert_eq!((failures[0].index, failures[0].attempts), (1, 1));
    assert_eq!((failures[1].index, failures[1].attempts), (2, 1));
    let report = runner.report();
    assert_eq!((report.steps[0].outcome, report.steps[0].attempts), (StepOutcome::Ok, 2), "retried once on request");
    assert_eq!(report.steps[1].outcome, StepOutcome::Failed);
}

#[tokio::test]
async fn a_network_drop_during_a_step_is_reported_and_retries_recover_from_it() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
retries = 1
shell = { inline = ["if [ ! -e @DIR@/dropped ]; then touch @DIR@/running; sleep 60; fi", "echo finished"], remote_dir = "@DIR@/remote" }
"#,
        &[],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let drop_it = async {
        // The machine side: once the command runs, cut every SSH connection (the sshd listener stays).
        let wait = imgbake_core::wait::Wait::new(Duration::from_secs(30))
            .interval(Duration::from_millis(20), Duration::from_millis(100));
        let running = fx.path("running");
        let r: Result<(), imgbake_core::wait::WaitError<()>> =
            imgbake_core::wait::until(&wait, "the command to start", || {
                let there = running.exists();
                async move {
                    if there {
                        imgbake_core::wait::Poll::Ready(())
                    } else {
                        imgbake_core::wait::Poll::Pending("no".into())
                    }
                }
            })
            .await;
        r.unwrap();
        std::fs::write(fx.path("dropped"), b"").unwrap();
        assert!(bed.kill_sessions() > 0);
    };
    let (result, ()) = tokio::join!(runner.provision(&comm, None), drop_it);
    result.unwrap_or_else(|e| panic!("{}\n{:#?}", e.chain(), log.events()));
    let w = warnings(&log);
    assert!(
        w.iter().any(|m| m.starts_with("attempt 1 of 2 failed")
            && m.contains("did not reboot")
            && m.contains("outcome is unknown")),
        "{w:?}"
    );
    assert!(
        log.events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::State { state, .. } if state.contains("same boot (network drop)"))),
        "the drop is reported as such"
    );
    assert_eq!(output(&log), vec!["finished"]);
    assert_eq!(runner.report().steps[0].attempts, 2);
}

#[tokio::test]
async fn secrets_never_appear_in_output_errors_or_reports() {
    require_pytest();
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "uses the secret"
shell = { inline = ["echo \"the password is $PASSWORD\"", "echo '{{ var.secret }}' > @DIR@/remote-copy", "echo \"stderr {{ var.secret }}\" >&2"], env = { PASSWORD = "{{ var.secret }}" }, remote_dir = "@DIR@/remote" }

[[images.box.steps]]
local = { command = "echo local sees $PASSWORD", env = { PASSWORD = "{{ var.secret }}" } }

[[images.box.steps]]
test = { source = "tests", destination = "@DIR@/remote/tests", command = "/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml=r.xml", report = "r.xml", env = { PASSWORD = "{{ var.secret }}" } }
"#,
        &[(
            "tests/test_secret.py",
            "import os\n\ndef test_secret_leaks_into_the_failure():\n    assert os.environ['PASSWORD'] == 'nope'\n",
        )],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Test);

    // The secret really reached the machine...
    assert_eq!(std::fs::read_to_string(fx.path("remote-copy")).unwrap().trim(), SECRET);
    // ...and the output mentioning it was redacted.
    assert!(output(&log).contains(&"the password is <sensitive>".to_string()), "{:?}", output(&log));
    assert!(output(&log).contains(&"local sees <sensitive>".to_string()));
    let report = runner.report();
    let failed = &report.tests[0].cases[0];
    assert!(failed.message.as_deref().unwrap().contains("<sensitive>"), "pytest quotes the value: {failed:?}");

    let everything =
        format!("{}\n{}\n{:?}\n{}", all_text(&log.events()), err.chain(), err, serde_json::to_string(&report).unwrap());
    assert!(!everything.contains(SECRET), "the secret leaked:\n{everything}");
}

#[tokio::test]
async fn platform_reboot_without_a_platform_is_a_config_error() {
    let bed = sshd().await;
    let fx = fixture("[[images.box.steps]]\nreboot = { method = \"platform\" }\n", &[]);
    let comm = communicator(&bed);
    let (runner, _log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("offers no platform reboot"), "{}", err.message);
    assert_eq!(runner.report().steps[0].attempts, 1, "config errors are not retried");
}

#[tokio::test]
async fn sshd_killed_mid_step_and_never_restarted_fails_within_the_communicator_timeout_with_progress() {
    let mut bed = sshd().await;
    let fx = fixture_with(
        r#"timeout = "6s""#,
        r#"
[[images.box.steps]]
shell = { inline = ["touch @DIR@/running", "sleep 60"], remote_dir = "@DIR@/remote" }
"#,
        &[],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let running = fx.path("running");
    let kill_it = async {
        let wait = imgbake_core::wait::Wait::new(Duration::from_secs(30))
            .interval(Duration::from_millis(20), Duration::from_millis(100));
        let r: Result<(), imgbake_core::wait::WaitError<()>> =
            imgbake_core::wait::until(&wait, "the command to start", || {
                let there = running.exists();
                async move {
                    if there {
                        imgbake_core::wait::Poll::Ready(())
                    } else {
                        imgbake_core::wait::Poll::Pending("no".into())
                    }
                }
            })
            .await;
        r.unwrap();
        // The machine's sshd and its sessions die and nothing starts it again.
        bed.stop();
        Instant::now()
    };
    // Before the fix this sat for the 30-minute reboot timeout with no output: cap it well below.
    let run = tokio::time::timeout(Duration::from_secs(60), runner.provision(&comm, None));
    let (result, killed_at) = tokio::join!(run, kill_it);
    let err = result.expect("the build must end by itself within the communicator timeout").unwrap_err();
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(20), "ended {took:?} after sshd died; communicator.timeout is 6s");
    assert!(
        err.message.contains("did not come back") && err.message.contains("communicator.timeout"),
        "the error says what imgbake waited for and which setting bounds it: {}",
        err.message
    );
    let states: Vec<String> = log
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::State { state, .. } if state.contains("down") => Some(state.clone()),
            _ => None,
        })
        .collect();
    assert!(states.len() >= 2, "progress is shown while waiting: {states:?}");
}

/// Every process's command line on the box, as snapshotted by a step (NUL-separated words).
fn cmdlines_hold(snapshot: &std::path::Path, value: &str) -> bool {
    let bytes = std::fs::read(snapshot).unwrap_or_else(|e| panic!("{}: {e}", snapshot.display()));
    assert!(bytes.len() > 100, "the snapshot of /proc/*/cmdline is suspiciously small: {}", bytes.len());
    bytes.windows(value.len()).any(|w| w == value.as_bytes())
}

#[tokio::test]
async fn step_env_travels_in_a_file_that_is_gone_while_the_step_runs_and_never_on_a_command_line() {
    let bed = sshd().await;
    let value = format!("env-value-{}-xyzzy", std::process::id());
    // A `sudo`-like wrapper: it stays the parent of the command (as sudo does), so whatever it was
    // given stays visible in /proc/PID/cmdline while the step runs.
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
name = "wrapped"
shell = {{ inline = ["echo \"token=$TOKEN other=$OTHER\"", "ls -a @DIR@/remote > @DIR@/listing", "cat /proc/[0-9]*/cmdline > @DIR@/cmdlines-shell 2>/dev/null || true"], env = {{ TOKEN = "{value}", OTHER = "it's $HOME" }}, remote_dir = "@DIR@/remote", execute_command = "@DIR@/fake-sudo env {{{{vars}}}} sh -c {{{{quote command}}}}" }}

[[images.box.steps]]
name = "tests"
test = {{ destination = "@DIR@/remote/tests", command = "echo \"test sees $TOKEN\"; cat /proc/[0-9]*/cmdline > @DIR@/cmdlines-test 2>/dev/null; true", env = {{ TOKEN = "{value}" }} }}
"#
        ),
        &[("fake-sudo", "#!/bin/sh\n\"$@\"\nexit $?\n")],
    );
    std::fs::set_permissions(fx.path("fake-sudo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    runner.provision(&comm, None).await.unwrap_or_else(|e| panic!("{}\n{:#?}", e.chain(), log.events()));

    assert_eq!(step_output(&log, "wrapped"), vec![format!("token={value} other=it's $HOME")]);
    assert_eq!(step_output(&log, "tests"), vec![format!("test sees {value}")]);
    assert!(!cmdlines_hold(&fx.path("cmdlines-shell"), &value), "a process's command line held the value (shell step)");
    assert!(!cmdlines_hold(&fx.path("cmdlines-test"), &value), "a process's command line held the value (test step)");
    let listing = std::fs::read_to_string(fx.path("listing")).unwrap();
    let names: Vec<&str> = listing.lines().filter(|n| n.starts_with("imgbake-")).collect();
    assert_eq!(names.len(), 1, "only the running script is there, the environment file is gone: {names:?}");
    assert!(names[0].ends_with(".sh"), "{names:?}");
    assert_eq!(leftovers(&fx.path("remote"), "imgbake-"), Vec::<String>::new());
    comm.disconnect().await;
}
