//! `test`: run an on-box test suite as a build phase.
//!
//! 1. `source` (a local directory or file) is uploaded to `destination` (default `/tmp/imgbake-tests`,
//!    Windows `C:/Windows/Temp/imgbake-tests`), replacing what was there;
//! 2. `command` runs in that directory with `env`, through `execute_command` (the step's, else the
//!    image's);
//! 3. the JUnit XML `report` it wrote (relative to the tests' directory) is fetched, kept on the imgbake
//!    host, parsed, and summarised: a `test_results` event, one warning per failed case;
//! 4. the tests are removed from the machine unless `keep = true` (so they can run again on instances
//!    of the image).
//!
//! The step fails (error kind `test`, so no artifact is made) when a case failed, the command exited
//! non-zero, or a configured report is missing or unreadable. The results are in
//! [`super::StepRunner::report`] either way, for the manifest.

use std::path::PathBuf;

use imgbake_config::{Os, TestStep};

use super::junit;
use super::remote::{Ran, RebootPolicy, remote_is_absolute, remote_join, remote_parent};
use super::report::{CaseOutcome, TestSuiteReport};
use super::{Ctx, humantime_short};
use crate::communicator::{ExecRequest, ExecStatus};
use crate::error::{BuildError, ErrorKind};
use crate::event::EventKind;

/// Where tests go on Linux when `destination` is not set.
pub const DEFAULT_DESTINATION_LINUX: &str = "/tmp/imgbake-tests";
/// Where tests go on Windows when `destination` is not set.
pub const DEFAULT_DESTINATION_WINDOWS: &str = "C:/Windows/Temp/imgbake-tests";

/// The tests' directory on the machine.
pub fn destination(os: Os, t: &TestStep) -> String {
    t.destination.clone().unwrap_or_else(|| {
        match os {
            Os::Linux => DEFAULT_DESTINATION_LINUX,
            Os::Windows => DEFAULT_DESTINATION_WINDOWS,
        }
        .to_string()
    })
}

pub(crate) async fn run(cx: &Ctx<'_>, t: &TestStep) -> Result<(), BuildError> {
    let os = cx.os();
    let dest = destination(os, t);
    let execute_command = cx.execute_command(t.execute_command.as_ref());
    // Replace what an earlier build or attempt left, so only these tests run. Removed with the step's
    // wrapper: a test run under sudo leaves files the login user cannot delete.
    if let Err(e) = cx.housekeeping(super::remote::remove_command(os, &dest), execute_command.clone()).await {
        return Err(cx.fail(ErrorKind::Communicator, format!("cannot clear the tests' directory {dest}: {e}")));
    }
    match &t.source {
        Some(source) => {
            let local = cx.readable_local(source, "the tests ")?;
            if let Some(parent) = remote_parent(&dest) {
                cx.make_remote_dir(parent).await?;
            }
            if local.is_dir() {
                cx.transfer("uploading the tests", || cx.comm.upload(&local, &dest, &cx.events)).await?;
            } else {
                // A single test file goes into the tests' directory.
                cx.make_remote_dir(&dest).await?;
                let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "test".into());
                let target = remote_join(&dest, &name);
                cx.transfer("uploading the test file", || cx.comm.upload(&local, &target, &cx.events)).await?;
            }
        }
        None => cx.make_remote_dir(&dest).await?,
    }

    let req = ExecRequest {
        command: t.command.get_ref().clone(),
        env: t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: Some(dest.clone()),
        execute_command: execute_command.clone(),
        ..ExecRequest::default()
    };
    let env_dir = match os {
        Os::Linux => super::shell::DEFAULT_REMOTE_DIR,
        Os::Windows => super::powershell::DEFAULT_REMOTE_DIR,
    };
    let ran = super::shell::exec_with_env(cx, &req, env_dir, RebootPolicy::default(), &[0]).await;
    let status = match ran {
        Ok(Ran::Exited(out)) => out.status,
        Ok(Ran::Rebooted | Ran::Rerun) => ExecStatus::ConnectionLost,
        Err(e) => {
            if !t.keep {
                cx.remove_remote(&dest, execute_command.clone()).await;
            }
            return Err(e);
        }
    };
    let exit_code = match status {
        ExecStatus::Exited(c) => Some(c),
        _ => None,
    };

    let fetched = match &t.report {
        Some(report) => Some(fetch_report(cx, &dest, report).await),
        None => None,
    };
    if !t.keep {
        cx.remove_remote(&dest, execute_command).await;
    } else {
        cx.events.info(format!("the tests stay on the image in {dest} (keep = true)"));
    }

    let mut suite = TestSuiteReport {
        step: cx.label.clone(),
        passed: 0,
        failed: 0,
        skipped: 0,
        cases: Vec::new(),
        report_file: None,
        exit_code,
    };
    let mut report_problem = None;
    match fetched {
        Some(Ok((path, cases))) => {
            let (p, f, s) = junit::count(&cases);
            suite.passed = p;
            suite.failed = f;
            suite.skipped = s;
            suite.cases = cases
                .into_iter()
                .map(|mut c| {
                    // Failure messages can quote anything the tests saw.
                    c.message = c.message.map(|m| cx.events.redact(&m));
                    c.name = cx.events.redact(&c.name);
                    c
                })
                .collect();
            suite.report_file = Some(path);
        }
        Some(Err(problem)) => report_problem = Some(problem),
        None => {}
    }
    summarise(cx, &suite);
    let failed = suite.failed;
    let with_report = t.report.is_some();
    cx.runner.record_tests(suite);

    if let Some(problem) = report_problem {
        let cmd = match status {
            ExecStatus::Exited(0) => String::new(),
            ref s => format!("the test command {s}, and "),
        };
        return Err(cx.fail(ErrorKind::Test, format!("{cmd}{problem}")));
    }
    if failed > 0 {
        return Err(
            cx.fail(ErrorKind::Test, format!("{failed} test case(s) failed; no artifact is made from this machine"))
        );
    }
    match status {
        ExecStatus::Exited(0) => {}
        ExecStatus::Exited(c) if with_report => {
            return Err(cx.fail(
                ErrorKind::Test,
                format!(
                    "the test command exited with {c} although its report shows no failed case; see its output above"
                ),
            ));
        }
        ref s => return Err(cx.fail(ErrorKind::Test, format!("the test command {s}; see its output above"))),
    }
    Ok(())
}

/// Fetch and parse the report; `Err` says what is wrong with it.
async fn fetch_report(
    cx: &Ctx<'_>,
    dest: &str,
    report: &str,
) -> Result<(PathBuf, Vec<crate::provision::TestCase>), String> {
    let remote = if remote_is_absolute(cx.os(), report) { report.to_string() } else { remote_join(dest, report) };
    let local = report_path(cx);
    if let Some(dir) = local.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {} for the test report: {e}", dir.display()))?;
    }
    let got = cx.comm.download(&remote, &local, &cx.events).await;
    if let Err(e) = got {
        if e.is_not_up() {
            return Err(format!("the connection was lost while fetching the test report {remote}: {e}"));
        }
        return Err(format!("the test report {remote} could not be fetched (did the command write it?): {e}"));
    }
    let xml = std::fs::read(&local).map_err(|e| format!("cannot read the fetched report {}: {e}", local.display()))?;
    // Failure messages quote what the tests saw, secrets included: the kept copy is redacted too.
    let xml = redact_xml(&String::from_utf8_lossy(&xml), &cx.tree().secrets());
    std::fs::write(&local, &xml).map_err(|e| format!("cannot write the redacted report {}: {e}", local.display()))?;
    let cases =
        junit::parse(&xml).map_err(|e| format!("the test report {remote} (kept in {}) is {e}", local.display()))?;
    if cases.is_empty() {
        cx.events.warn(format!("the test report {remote} lists no test cases"));
    }
    Ok((local, cases))
}

/// Replace every secret (as is, and XML-escaped) in a report with an escaped `<sensitive>`.
pub fn redact_xml(xml: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = xml.to_string();
    for s in secrets {
        let escaped = quick_xml::escape::escape(s.as_str());
        for form in [s.as_str(), escaped.as_ref()] {
            if out.contains(form) {
                out = out.replace(form, "&lt;sensitive&gt;");
            }
        }
    }
    out
}

/// Where the fetched report is kept: `<report_dir or state_dir/reports/IMAGE>/<build id>-<step>.xml`.
fn report_path(cx: &Ctx<'_>) -> PathBuf {
    let rc = &cx.runner.cx;
    let dir = rc.report_dir.clone().unwrap_or_else(|| cx.tree().state_dir().join("reports").join(&rc.image));
    let build = rc
        .values
        .get("IMGBAKE_BUILD_ID")
        .cloned()
        .unwrap_or_else(|| chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string());
    let step: String = cx.label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let safe_build: String =
        build.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    dir.join(format!("{safe_build}-{}-{step}.xml", cx.index))
}

fn summarise(cx: &Ctx<'_>, suite: &TestSuiteReport) {
    cx.events.emit(EventKind::TestResults { passed: suite.passed, failed: suite.failed, skipped: suite.skipped });
    for c in suite.cases.iter().filter(|c| matches!(c.outcome, CaseOutcome::Failed | CaseOutcome::Error)) {
        let name = if c.classname.is_empty() { c.name.clone() } else { format!("{}::{}", c.classname, c.name) };
        let what = if c.outcome == CaseOutcome::Error { "error" } else { "failed" };
        let msg = c.message.as_deref().map(|m| format!(": {}", m.lines().next().unwrap_or(m))).unwrap_or_default();
        cx.events.warn(format!("test {what}: {name}{msg}"));
    }
    let total: std::time::Duration = suite.cases.iter().filter_map(|c| c.time).sum();
    let file = suite.report_file.as_ref().map(|p| format!(" (report: {})", p.display())).unwrap_or_default();
    cx.events.info(format!(
        "tests: {} passed, {} failed, {} skipped in {}{file}",
        suite.passed,
        suite.failed,
        suite.skipped,
        humantime_short(total)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_redacted_in_both_forms() {
        let xml = "<testcase name='a'><failure message=\"got x&amp;y&lt;z and xy\">x&amp;y&lt;z</failure></testcase>";
        let out = redact_xml(xml, &["x&y<z".into(), "xy".into(), String::new()]);
        assert_eq!(
            out,
            "<testcase name='a'><failure message=\"got &lt;sensitive&gt; and &lt;sensitive&gt;\">&lt;sensitive&gt;</failure></testcase>"
        );
        let cases = junit::parse(&format!("<testsuite>{out}</testsuite>")).unwrap();
        assert_eq!(cases[0].message.as_deref(), Some("got <sensitive> and <sensitive>"));
    }
}
