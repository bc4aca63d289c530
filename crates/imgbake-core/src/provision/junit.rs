//! Reading JUnit XML test reports — the format pytest (`--junitxml`), ServerSpec (`rspec_junit_formatter`),
//! goss (`--format junit`), Go's `go-junit-report`, Pester and the shell suite in
//! `provisioners/linux/junit.sh` all write.
//!
//! Both shapes are read: a `<testsuites>` root holding `<testsuite>`s (nested or not), or a single
//! `<testsuite>` root. Counts come from the `<testcase>`s themselves, not from the suites' attributes,
//! which some writers get wrong. A case with `<failure>` failed, with `<error>` is an error (counted as
//! failed), with `<skipped>` was skipped; anything else passed.
//!
//! ```
//! use imgbake_core::provision::junit::parse;
//! use imgbake_core::provision::CaseOutcome;
//!
//! let xml = r#"<testsuite name="web"><testcase classname="t" name="nginx_runs"/>
//!   <testcase classname="t" name="port_80"><failure message="closed">port 80 is closed</failure></testcase>
//! </testsuite>"#;
//! let cases = parse(xml).unwrap();
//! assert_eq!(cases.len(), 2);
//! assert_eq!(cases[1].outcome, CaseOutcome::Failed);
//! assert_eq!(cases[1].message.as_deref(), Some("closed"));
//! ```

use std::time::Duration;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use super::report::{CaseOutcome, TestCase};

/// Longest message kept per case (the full text stays in the report file).
const MAX_MESSAGE: usize = 2000;

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// Not well-formed XML.
    #[error("not valid XML at byte {position}: {reason}")]
    Xml {
        /// Byte offset.
        position: u64,
        /// The parser's message.
        reason: String,
    },
    /// Well-formed, but not a JUnit report.
    #[error("not a JUnit XML report: {0}")]
    NotJunit(String),
}

/// Where the parser is inside a `<testcase>`.
struct Open {
    case: TestCase,
    /// Inside `<failure>`/`<error>`/`<skipped>`: its text so far.
    detail: Option<String>,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let a = e.try_get_attribute(name).ok().flatten()?;
    a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned())
}

fn seconds(text: Option<String>) -> Option<Duration> {
    // Some writers use a comma as decimal separator (localised `time="0,123"`).
    let secs: f64 = text?.trim().replace(',', ".").parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parse a JUnit XML report into its test cases, in document order.
pub fn parse(xml: &str) -> Result<Vec<TestCase>, JunitError> {
    let mut reader = Reader::from_str(xml);
    let mut suites: Vec<String> = Vec::new();
    let mut cases = Vec::new();
    let mut open: Option<Open> = None;
    let mut saw_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| JunitError::Xml { position: reader.error_position(), reason: e.to_string() })?;
        match event {
            Event::Start(e) | Event::Empty(e) if !saw_root => {
                saw_root = true;
                let name = e.local_name().as_ref().to_string();
                if name != "testsuites" && name != "testsuite" {
                    return Err(JunitError::NotJunit(format!(
                        "the root element is <{name}>, expected <testsuites> or <testsuite>"
                    )));
                }
                // Self-closing: an empty report, nothing to open.
                let empty = xml.get(..reader.buffer_position() as usize).is_some_and(|s| s.ends_with("/>"));
                start(&e, empty, &mut suites, &mut open, &mut cases);
            }
            Event::Start(e) => start(&e, false, &mut suites, &mut open, &mut cases),
            Event::Empty(e) => start(&e, true, &mut suites, &mut open, &mut cases),
            Event::End(e) => {
                let name = e.local_name();
                match name.as_ref() {
                    "testsuite" => {
                        suites.pop();
                    }
                    "testcase" => {
                        if let Some(o) = open.take() {
                            cases.push(o.case);
                        }
                    }
                    "failure" | "error" | "skipped" => {
                        if let Some(o) = open.as_mut()
                            && let Some(text) = o.detail.take()
                            && o.case.message.as_deref().is_none_or(str::is_empty)
                        {
                            let first = text.trim();
                            o.case.message = (!first.is_empty()).then(|| clip(first));
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => push_text(&mut open, &t.xml10_content()),
            Event::CData(t) => push_text(&mut open, &String::from_utf8_lossy(t.as_ref().as_bytes())),
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                let text = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => resolve_predefined_entity(&name).map(str::to_string).unwrap_or_default(),
                };
                push_text(&mut open, &text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(JunitError::NotJunit("the document is empty".into()));
    }
    if let Some(o) = open {
        cases.push(o.case);
    }
    Ok(cases)
}

fn push_text(open: &mut Option<Open>, text: &str) {
    if let Some(Open { detail: Some(d), .. }) = open
        && d.len() < MAX_MESSAGE * 2
    {
        d.push_str(text);
    }
}

fn start(
    e: &BytesStart<'_>,
    empty: bool,
    suites: &mut Vec<String>,
    open: &mut Option<Open>,
    cases: &mut Vec<TestCase>,
) {
    match e.local_name().as_ref() {
        "testsuite" if !empty => suites.push(attr(e, "name").unwrap_or_default()),
        "testcase" => {
            // A case left open by a broken writer is kept as it is.
            if let Some(o) = open.take() {
                cases.push(o.case);
            }
            let case = TestCase {
                suite: suites.last().cloned().unwrap_or_default(),
                classname: attr(e, "classname").unwrap_or_default(),
                name: attr(e, "name").unwrap_or_default(),
                outcome: CaseOutcome::Passed,
                time: seconds(attr(e, "time")),
                message: None,
            };
            if empty {
                cases.push(case);
            } else {
                *open = Some(Open { case, detail: None });
            }
        }
        tag @ ("failure" | "error" | "skipped") => {
            let Some(o) = open.as_mut() else { return };
            let outcome = match tag {
                "failure" => CaseOutcome::Failed,
                "error" => CaseOutcome::Error,
                _ => CaseOutcome::Skipped,
            };
            // A failure beats a skip, an error beats both.
            let rank = |c: CaseOutcome| match c {
                CaseOutcome::Passed => 0,
                CaseOutcome::Skipped => 1,
                CaseOutcome::Failed => 2,
                CaseOutcome::Error => 3,
            };
            if rank(outcome) >= rank(o.case.outcome) {
                o.case.outcome = outcome;
                o.case.message = attr(e, "message").filter(|m| !m.trim().is_empty()).map(|m| clip(&m));
                o.detail = (!empty).then(String::new);
            }
        }
        _ => {}
    }
}

/// Counts of cases: (passed, failed including errors, skipped).
pub fn count(cases: &[TestCase]) -> (u32, u32, u32) {
    cases.iter().fold((0, 0, 0), |(p, f, s), c| match c.outcome {
        CaseOutcome::Passed => (p + 1, f, s),
        CaseOutcome::Failed | CaseOutcome::Error => (p, f + 1, s),
        CaseOutcome::Skipped => (p, f, s + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pytest 7 writes with `--junitxml` (one failure, one skip, one error in a fixture).
    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.061" timestamp="2026-11-24T10:00:00" hostname="box"><testcase classname="test_web" name="test_ok" time="0.001" /><testcase classname="test_web" name="test_port" time="0.002"><failure message="assert 1 == 2">def test_port():
&gt;       assert 1 == 2
E       assert 1 == 2</failure></testcase><testcase classname="test_web" name="test_later" time="0.000"><skipped type="pytest.skip" message="not on this image">/t/test_web.py:9: not on this image</skipped></testcase><testcase classname="test_web" name="test_fixture" time="0.001"><error message="failed on setup with &quot;RuntimeError: no db&quot;">setup failed</error></testcase></testsuite></testsuites>"#;

    #[test]
    fn pytest_report() {
        let cases = parse(PYTEST).unwrap();
        assert_eq!(cases.len(), 4);
        assert_eq!(count(&cases), (1, 2, 1));
        assert_eq!(cases[0].suite, "pytest");
        assert_eq!(cases[0].classname, "test_web");
        assert_eq!(cases[0].time, Some(Duration::from_millis(1)));
        assert_eq!(cases[1].message.as_deref(), Some("assert 1 == 2"));
        assert_eq!(cases[2].outcome, CaseOutcome::Skipped);
        assert_eq!(cases[3].outcome, CaseOutcome::Error);
        assert_eq!(cases[3].message.as_deref(), Some("failed on setup with \"RuntimeError: no db\""));
    }

    #[test]
    fn message_from_text_and_cdata_when_no_attribute() {
        let xml = "<testsuite name='s'><testcase name='a'><failure><![CDATA[boom <b>]]> &amp; more</failure></testcase>\
                   <testcase name='b'><system-out>lots of output</system-out></testcase></testsuite>";
        let cases = parse(xml).unwrap();
        assert_eq!(cases[0].message.as_deref(), Some("boom <b> & more"));
        assert_eq!(cases[1].outcome, CaseOutcome::Passed);
        assert_eq!(cases[1].message, None);
    }

    #[test]
    fn nested_suites_and_empty_reports() {
        let xml = "<testsuites><testsuite name='outer'><testsuite name='inner'><testcase name='x'/></testsuite>\
                   <testcase name='y'/></testsuite></testsuites>";
        let cases = parse(xml).unwrap();
        assert_eq!((cases[0].suite.as_str(), cases[1].suite.as_str()), ("inner", "outer"));
        assert!(parse("<testsuites/>").unwrap().is_empty());
        assert!(parse("<testsuite name='empty' tests='0'></testsuite>").unwrap().is_empty());
    }

    #[test]
    fn broken_reports_are_errors() {
        assert!(matches!(parse("<html><body/></html>"), Err(JunitError::NotJunit(_))));
        assert!(matches!(parse(""), Err(JunitError::NotJunit(_))));
        let e = parse("<testsuite><testcase name='a'></testsuite>").unwrap_err();
        assert!(matches!(e, JunitError::Xml { .. }), "{e}");
    }

    #[test]
    fn long_messages_are_clipped_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let xml = format!("<testsuite><testcase name='a'><failure message='{long}'/></testcase></testsuite>");
        let m = parse(&xml).unwrap()[0].message.clone().unwrap();
        assert!(m.len() <= MAX_MESSAGE + 3 && m.ends_with('…'), "{}", m.len());
    }
}
