//! The report's structure, escaping, redaction and graph, from hand-made runs.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use imgbake_core::artifact::Artifact;
use imgbake_core::event::{Event, EventKind, EventSink, Phase, Stream};
use imgbake_core::provision::{CaseOutcome, ProvisionReport, StepOutcome, StepRecord, TestCase, TestSuiteReport};
use imgbake_core::schedule::{ImageResult, RunSummary, Status};

use super::*;

fn result(image: &str, status: Status) -> ImageResult {
    ImageResult {
        image: image.into(),
        builder: "aws".into(),
        status,
        artifact: None,
        reasons: vec![],
        error: None,
        error_location: None,
        error_span: None,
        started: None,
        duration: None,
        published: vec![],
        report: None,
    }
}

fn artifact(image: &str, id: &str) -> Artifact {
    Artifact {
        image: image.into(),
        builder: "aws".into(),
        id: id.into(),
        locations: BTreeMap::from([("eu-west-1".into(), id.into()), ("us-east-1".into(), format!("{id}-copy"))]),
        fingerprint: "v1:abc".into(),
        source: "ami-source".into(),
        parent: None,
        build_id: "b1".into(),
        created: Utc::now(),
        extra: BTreeMap::new(),
    }
}

/// base (reused) → runtime (built; tests: 2 passed, 1 failed) → app (failed) and worker (skipped);
/// base → tools (cancelled).
fn three_level_run() -> (Vec<Node>, Vec<Event>, RunSummary) {
    let nodes = vec![
        Node::new("base", None, "aws"),
        Node::new("runtime", Some("base"), "aws"),
        Node::new("app", Some("runtime"), "aws"),
        Node::new("tools", Some("base"), "aws"),
        Node::new("worker", Some("runtime"), "aws"),
    ];
    let (sink, log) = EventSink::memory();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let mut events: Vec<Event> = Vec::new();
    let mut ev = |image: &str, s: i64, kind: EventKind| {
        sink.for_image(image).emit(kind);
        let mut e = log.events().pop().unwrap();
        e.at = at(s);
        events.push(e);
    };
    ev("runtime", 0, EventKind::BuildStarted { build_id: "b1".into(), builder: "aws".into() });
    ev("runtime", 0, EventKind::Phase { phase: Phase::Prepare });
    ev("runtime", 2, EventKind::Phase { phase: Phase::Launch });
    ev("runtime", 12, EventKind::Phase { phase: Phase::Provision });
    ev("runtime", 40, EventKind::Phase { phase: Phase::Capture });
    ev(
        "runtime",
        100,
        EventKind::BuildFinished { outcome: Status::Built, duration: Duration::from_secs(100), error: None },
    );
    ev("app", 101, EventKind::BuildStarted { build_id: "b1".into(), builder: "aws".into() });
    ev("app", 101, EventKind::Phase { phase: Phase::Prepare });
    ev("app", 103, EventKind::Phase { phase: Phase::Provision });
    ev(
        "app",
        104,
        EventKind::Output { stream: Stream::Stderr, line: "\u{1b}[31m<script>alert('x')</script>\u{1b}[0m".into() },
    );
    ev("app", 105, EventKind::Phase { phase: Phase::Cleanup });
    ev("app", 110, EventKind::BuildFinished { outcome: Status::Failed, duration: Duration::from_secs(9), error: None });
    ev("tools", 1, EventKind::BuildStarted { build_id: "b1".into(), builder: "aws".into() });
    ev("tools", 1, EventKind::Phase { phase: Phase::Prepare });
    ev("tools", 5, EventKind::Warning { message: "stopped by Ctrl-C & cleaned up".into() });
    ev(
        "tools",
        6,
        EventKind::BuildFinished { outcome: Status::Cancelled, duration: Duration::from_secs(5), error: None },
    );

    let mut base = result("base", Status::Reused);
    base.artifact = Some(artifact("base", "ami-base"));
    base.reasons = vec!["up to date".into()];
    let mut runtime = result("runtime", Status::Built);
    runtime.artifact = Some(artifact("runtime", "ami-runtime"));
    runtime.duration = Some(Duration::from_secs(100));
    runtime.report = Some(ProvisionReport {
        steps: vec![StepRecord {
            index: 1,
            name: "install java".into(),
            kind: "shell".into(),
            outcome: StepOutcome::Ok,
            duration: Duration::from_secs(20),
            attempts: 1,
            error: None,
        }],
        tests: vec![TestSuiteReport {
            step: "runtime tests".into(),
            passed: 2,
            failed: 1,
            skipped: 0,
            cases: vec![
                TestCase {
                    suite: "s".into(),
                    classname: "java".into(),
                    name: "java_runs".into(),
                    outcome: CaseOutcome::Passed,
                    time: None,
                    message: None,
                },
                TestCase {
                    suite: "s".into(),
                    classname: "java".into(),
                    name: "heap <default>".into(),
                    outcome: CaseOutcome::Failed,
                    time: None,
                    message: Some("expected 2g, got \"1g\"".into()),
                },
            ],
            report_file: None,
            exit_code: Some(1),
        }],
    });
    let mut app = result("app", Status::Failed);
    app.error = Some("step `deploy` failed: exit 3: cannot log in with s3cr3t-value".into());
    app.error_location = Some("tree.toml:20:1".into());
    app.duration = Some(Duration::from_secs(9));
    let mut worker = result("worker", Status::Skipped);
    worker.reasons = vec!["parent runtime failed".into()];
    let tools = result("tools", Status::Cancelled);
    let summary = RunSummary {
        build_id: "b20261124-100000-abcd".into(),
        results: vec![base, runtime, app, tools, worker],
        manifest: None,
        leftovers: vec![],
    };
    (nodes, events, summary)
}

fn render_three_levels() -> String {
    let (nodes, events, summary) = three_level_run();
    Report::new("shop <images>", nodes, &events)
        .summary(&summary)
        .secrets(["s3cr3t-value".to_string()])
        .finished_at(Utc.with_ymd_and_hms(2026, 11, 24, 10, 2, 0).unwrap())
        .render()
}

/// The value of attribute `attr` in every tag that has `marker`, in order.
fn attrs(html: &str, marker: &str, attr: &str) -> Vec<String> {
    html.match_indices(marker)
        .filter_map(|(i, _)| {
            let tag = &html[i..i + html[i..].find('>')?];
            let start = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
            Some(tag[start..start + tag[start..].find('"')?].to_string())
        })
        .collect()
}

#[test]
fn every_image_has_a_graph_node_a_table_row_and_a_detail_section_with_its_status() {
    let html = render_three_levels();
    let expect =
        [("base", "reused"), ("runtime", "built"), ("app", "failed"), ("tools", "cancelled"), ("worker", "skipped")];
    for (image, status) in expect {
        for marker in ["<g class=\"node", "<tr data-image=", "<section class=\"image-detail\""] {
            let images = attrs(&html, marker, "data-image");
            assert!(images.contains(&image.to_string()), "{marker} for {image}: {images:?}");
        }
        assert!(html.contains(&format!("data-image=\"{image}\" data-status=\"{status}\"")), "{image} is {status}");
        // Status in words in the node, not only by colour.
        assert!(html.contains(&format!(">{status}")) || html.contains(&format!(" {status} ·")), "{status} as text");
    }
    assert_eq!(attrs(&html, "<g class=\"node", "data-image").len(), 5, "one node per image");
    assert!(html.contains("b20261124-100000-abcd"), "the build id");
    assert!(html.contains("data-verdict=\"interrupted\""), "a cancelled build makes the run interrupted");
}

#[test]
fn the_graph_draws_parents_above_children_with_an_edge_each() {
    let html = render_three_levels();
    let names = attrs(&html, "<g class=\"node", "data-image");
    let transforms = attrs(&html, "<g class=\"node", "transform");
    let y = |image: &str| -> f64 {
        let i = names.iter().position(|n| n == image).unwrap();
        let t = transforms[i].trim_start_matches("translate(").trim_end_matches(')');
        t.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert!(y("base") < y("runtime") && y("runtime") < y("app"), "three levels");
    assert_eq!(y("runtime"), y("tools"), "siblings share a layer");
    assert_eq!(y("app"), y("worker"));
    let from = attrs(&html, "<path class=\"edge\"", "data-from");
    let to = attrs(&html, "<path class=\"edge\"", "data-to");
    let edges: Vec<(String, String)> = from.into_iter().zip(to).collect();
    let want = [("base", "runtime"), ("runtime", "app"), ("base", "tools"), ("runtime", "worker")];
    assert_eq!(edges.len(), want.len(), "{edges:?}");
    for (a, b) in want {
        assert!(edges.contains(&(a.to_string(), b.to_string())), "{a} → {b} in {edges:?}");
    }
}

#[test]
fn text_is_escaped_and_terminal_codes_removed() {
    let html = render_three_levels();
    assert!(!html.contains("<script"), "step output cannot inject a script");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "it is shown as text");
    assert!(!html.contains('\u{1b}'), "no terminal escape codes");
    assert!(html.contains("shop &lt;images&gt;"), "the title");
    assert!(html.contains("heap &lt;default&gt;"), "a failing test's name");
    assert!(html.contains("expected 2g, got &quot;1g&quot;"), "its message");
    assert!(html.contains("Ctrl-C &amp; cleaned up"), "a warning");
}

#[test]
fn secrets_are_redacted_everywhere() {
    let html = render_three_levels();
    assert!(!html.contains("s3cr3t-value"));
    assert!(html.contains("cannot log in with &lt;sensitive&gt;"), "the error is shown, redacted");
}

#[test]
fn nothing_is_loaded_from_anywhere() {
    let html = render_three_levels();
    for needle in ["http://", "https://", "src=", "<link", "@import", "url(", "<script", "<iframe"] {
        assert!(!html.contains(needle), "{needle} in the report");
    }
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"), "and a policy forbids it");
}

#[test]
fn phase_timings_come_from_the_events() {
    let html = render_three_levels();
    // runtime: prepare 2 s, launch 10 s, provision 28 s, capture 60 s (to its build_finished).
    let row = html.split("<tr data-image=\"runtime\"><th scope=\"row\">runtime</th><td class=\"num\">").nth(1).unwrap();
    let row = &row[..row.find("</tr>").unwrap()];
    for d in ["2.0 s", "10.0 s", "28.0 s", "1m00s", "1m40s"] {
        assert!(row.contains(d), "{d} in {row}");
    }
    assert!(html.contains("<rect class=\"ph-capture\""), "the timeline draws the phases");
    // A build that never got past prepare still has its row.
    assert!(html.contains("<tr data-image=\"tools\"><th scope=\"row\">tools</th>"));
}

#[test]
fn tests_show_counts_and_failing_names_and_artifacts_their_locations() {
    let html = render_three_levels();
    assert!(html.contains("2 passed, 1 failed"), "counts in the overview");
    assert!(html.contains("data-test=\"heap &lt;default&gt;\""), "the failing test by name");
    assert!(!html.contains("data-test=\"java_runs\""), "passing tests are not listed as failing");
    assert!(html.contains("<td>us-east-1</td><td><code>ami-runtime-copy</code></td>"), "every location");
    assert!(html.contains("(tree.toml:20:1)"), "where the error points");
}

#[test]
fn without_a_summary_statuses_come_from_the_events_and_the_note_says_why() {
    let (nodes, events, _) = three_level_run();
    let html = Report::new("t", nodes, &events).note("interrupted during planning").render();
    assert!(html.contains("data-image=\"runtime\" data-status=\"built\""));
    assert!(html.contains("data-image=\"app\" data-status=\"failed\""));
    assert!(html.contains("data-image=\"base\" data-status=\"not run\""), "no event, no result");
    assert!(html.contains("interrupted during planning"));
    assert!(html.contains("b1"), "the build id from the events");
}

#[test]
fn overlapping_builds_of_one_image_get_no_guessed_phases() {
    let (sink, log) = EventSink::memory();
    let img = sink.for_image("multi");
    img.emit(EventKind::BuildStarted { build_id: "b".into(), builder: "aws".into() });
    img.emit(EventKind::BuildStarted { build_id: "b".into(), builder: "qemu".into() });
    img.emit(EventKind::Phase { phase: Phase::Launch });
    let events = log.events();
    let nodes = vec![Node { name: "multi".into(), parent: None, builders: vec!["aws".into(), "qemu".into()] }];
    let html = Report::new("t", nodes, &events).render();
    assert!(html.contains("overlapped"), "{html}");
    assert!(!html.contains("<rect class=\"ph-launch\""));
    assert_eq!(attrs(&html, "<tr data-image=\"multi\"", "data-status"), vec!["unfinished", "unfinished"]);
}

#[test]
fn the_report_is_written_atomically_and_a_bad_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    std::fs::write(&path, "old").unwrap();
    let (nodes, events, summary) = three_level_run();
    Report::new("t", nodes, &events).summary(&summary).write(&path).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("<!DOCTYPE html>"));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "no temporary file stays: {left:?}");

    let bad = dir.path().join("missing-dir").join("report.html");
    let err = Report::new("t", vec![], &[]).write(&bad).unwrap_err();
    assert!(matches!(err, ReportError::Write { .. }));
    assert!(err.to_string().contains(&bad.display().to_string()), "{err}");
    let err = Report::new("t", vec![], &[]).write(dir.path()).unwrap_err();
    assert!(matches!(err, ReportError::Rename { .. }), "a directory in the way: {err}");
}

#[test]
fn control_characters_and_colour_codes_are_stripped() {
    assert_eq!(strip_controls("\u{1b}[1;31mred\u{1b}[0m\tx\u{7}\u{0}"), "red\tx");
    assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
}
