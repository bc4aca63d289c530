//! What provisioning did, for the manifest: every step that ran and every test result, also for a
//! build that failed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// It did its job.
    Ok,
    /// `only` / `except` left it out for this builder.
    Skipped,
    /// It failed (after its retries).
    Failed,
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepOutcome {
    /// The word used in events (`ok`, `skipped`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Ok => "ok",
            StepOutcome::Skipped => "skipped",
            StepOutcome::Failed => "failed",
        }
    }
}

/// One step of the image, as run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRecord {
    /// Position in the image's step list, from 1.
    pub index: usize,
    /// Its name (`name`, else `KIND #N`).
    pub name: String,
    /// Its kind (`shell`, `test`, ...).
    pub kind: String,
    /// How it ended.
    pub outcome: StepOutcome,
    /// Wall time, pauses and retries included.
    #[serde(with = "crate::event::millis")]
    pub duration: Duration,
    /// How many times it ran (1 unless retried or rerun after a reboot).
    pub attempts: u32,
    /// Why it failed (secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How one test case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseOutcome {
    /// It passed.
    Passed,
    /// An assertion failed (`<failure>`).
    Failed,
    /// It could not run properly (`<error>`); counts as failed.
    Error,
    /// It was skipped (`<skipped>`).
    Skipped,
}

/// One test case of a JUnit XML report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestCase {
    /// The `<testsuite name>` it is in.
    pub suite: String,
    /// Its `classname` (often the test file or module).
    pub classname: String,
    /// Its `name`.
    pub name: String,
    /// How it ended.
    pub outcome: CaseOutcome,
    /// Its `time`, when given.
    #[serde(skip_serializing_if = "Option::is_none", with = "crate::event::millis::option")]
    pub time: Option<Duration>,
    /// The failure, error or skip message (its `message` attribute, else the start of its text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The results of one `test` step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestSuiteReport {
    /// The step's name.
    pub step: String,
    /// Passed cases.
    pub passed: u32,
    /// Failed cases (failures and errors).
    pub failed: u32,
    /// Skipped cases.
    pub skipped: u32,
    /// Every case.
    pub cases: Vec<TestCase>,
    /// The fetched JUnit XML report, kept on the imgbake host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_file: Option<PathBuf>,
    /// The test command's exit code (`None` when it did not exit normally).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl TestSuiteReport {
    /// No failed case and a command that exited 0.
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.exit_code == Some(0)
    }
}

/// Everything provisioning did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProvisionReport {
    /// The steps that ran or were skipped, in order (steps after a failure are not listed).
    pub steps: Vec<StepRecord>,
    /// Results of the `test` steps.
    pub tests: Vec<TestSuiteReport>,
}

impl ProvisionReport {
    /// Totals over every test step: (passed, failed, skipped).
    pub fn test_totals(&self) -> (u32, u32, u32) {
        self.tests.iter().fold((0, 0, 0), |(p, f, s), t| (p + t.passed, f + t.failed, s + t.skipped))
    }
}
