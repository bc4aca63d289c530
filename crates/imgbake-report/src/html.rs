//! The HTML: one self-contained page, no script, no request (a Content-Security-Policy forbids any),
//! every text escaped after secrets are redacted.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imgbake_core::event::{Phase, Stream};
use imgbake_core::provision::{CaseOutcome, StepOutcome};

use crate::layout::{Metrics, layout};
use crate::model::{BuildView, ImageView, Outcome};

/// `write!` to a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{ let _ = write!($out, $($arg)*); }};
}

/// Every phase, in run order (the timeline's colours and the phase table's columns).
pub const PHASES: [Phase; 9] = [
    Phase::Prepare,
    Phase::Launch,
    Phase::Connect,
    Phase::Provision,
    Phase::Sanitize,
    Phase::Shutdown,
    Phase::Capture,
    Phase::Distribute,
    Phase::Cleanup,
];

/// Escapes text for HTML content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Removes terminal colour sequences and control characters from program output (they would show
/// as junk, and some are not allowed in HTML at all); tabs and newlines stay.
pub fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e); other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for p in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&p) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || c == '\n' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// `350 ms`, `4.2 s`, `2m05s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Turns untrusted text into safe HTML: secrets redacted, controls removed, escaped.
pub struct Text {
    secrets: Vec<String>,
}

impl Text {
    /// Redacting these secrets (longest first, so one containing another goes whole).
    pub fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Text { secrets }
    }

    /// The text, redacted and cleaned, not yet escaped.
    pub fn plain(&self, s: &str) -> String {
        let mut out = strip_controls(s);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), imgbake_config::REDACTED);
            }
        }
        out
    }

    /// The text, ready for HTML content or a quoted attribute.
    pub fn h(&self, s: &str) -> String {
        escape(&self.plain(s))
    }
}

/// Everything the page needs besides the images.
pub struct Page<'a> {
    pub title: &'a str,
    pub build_id: Option<&'a str>,
    pub started: Option<DateTime<Utc>>,
    pub finished: DateTime<Utc>,
    pub note: Option<&'a str>,
    pub manifest: Option<String>,
    pub leftovers: Vec<String>,
    pub summary_ok: Option<bool>,
}

const STYLE: &str = r#"
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); margin: 0; padding: 1.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; } h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; } h4 { font-size: .95rem; margin: 1rem 0 .3rem; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
table { border-collapse: collapse; margin: .4rem 0; }
caption { text-align: left; padding: .2rem 0; }
th, td { border: 1px solid var(--line); padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
.note { border-left: 4px solid #bf8700; background: #fff8c5; padding: .5rem .8rem; }
.verdict { font-size: 1.1rem; font-weight: 600; display: inline-block; padding: .25rem .7rem; border-radius: 6px; border: 1px solid; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; border: 1px solid; font-weight: 600; white-space: nowrap; }
.built { color: #116329; background: #dafbe1; border-color: #1a7f37; }
.reused { color: #0550ae; background: #ddf4ff; border-color: #0969da; }
.failed { color: #a40e26; background: #ffebe9; border-color: #cf222e; }
.cancelled { color: #7d4e00; background: #fff8c5; border-color: #9a6700; }
.skipped, .not-run, .unfinished { color: #424a53; background: #f6f8fa; border-color: #818b98; }
.succeeded { color: #116329; background: #dafbe1; border-color: #1a7f37; }
.interrupted { color: #7d4e00; background: #fff8c5; border-color: #9a6700; }
svg text { font: 13px system-ui, -apple-system, "Segoe UI", sans-serif; }
svg .node rect { stroke-width: 2; }
svg .node.built rect { fill: #dafbe1; stroke: #1a7f37; } svg .node.built .status { fill: #116329; }
svg .node.reused rect { fill: #ddf4ff; stroke: #0969da; } svg .node.reused .status { fill: #0550ae; }
svg .node.failed rect { fill: #ffebe9; stroke: #cf222e; stroke-width: 3; } svg .node.failed .status { fill: #a40e26; }
svg .node.cancelled rect { fill: #fff8c5; stroke: #9a6700; } svg .node.cancelled .status { fill: #7d4e00; }
svg .node.skipped rect, svg .node.not-run rect, svg .node.unfinished rect { fill: #f6f8fa; stroke: #818b98; stroke-dasharray: 5 3; }
svg .node .name { font-weight: 600; fill: #1f2328; } svg .node .status { font-size: 12px; fill: #424a53; }
svg .edge { fill: none; stroke: #818b98; stroke-width: 1.6; }
svg a:focus rect, svg a:hover rect { stroke-width: 4; }
.legend { display: flex; gap: .5rem; flex-wrap: wrap; margin: .3rem 0 .6rem; padding: 0; list-style: none; }
.timeline .row-label { font-size: 12px; fill: #1f2328; } .timeline .axis { stroke: #d1d9e0; } .timeline .tick { font-size: 11px; fill: #59636e; }
.ph-prepare { fill: #8250df; } .ph-launch { fill: #0969da; } .ph-connect { fill: #1b7c83; } .ph-provision { fill: #1a7f37; }
.ph-sanitize { fill: #4d2d00; } .ph-shutdown { fill: #9a6700; } .ph-capture { fill: #bc4c00; } .ph-distribute { fill: #bf3989; } .ph-cleanup { fill: #6e7781; }
.swatch { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; vertical-align: -1px; margin-right: .25rem; }
.swatch.ph-prepare { background: #8250df; } .swatch.ph-launch { background: #0969da; } .swatch.ph-connect { background: #1b7c83; } .swatch.ph-provision { background: #1a7f37; }
.swatch.ph-sanitize { background: #4d2d00; } .swatch.ph-shutdown { background: #9a6700; } .swatch.ph-capture { background: #bc4c00; } .swatch.ph-distribute { background: #bf3989; } .swatch.ph-cleanup { background: #6e7781; }
.scroll { overflow-x: auto; }
.image-detail { border: 1px solid var(--line); border-radius: 8px; padding: .2rem 1rem .8rem; margin: 1rem 0; }
.image-detail:target { outline: 3px solid #0969da; }
.muted { color: var(--muted); }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 12px; }
"#;

/// Renders the page.
pub fn render(page: &Page<'_>, images: &[ImageView<'_>], t: &Text) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let verdict = verdict(page, images);
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"generator\" content=\"imgbake {}\">\n<title>{}: {} — imgbake build report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        t.h(page.title),
        verdict.0,
    );
    header(&mut out, page, images, verdict, t);
    out.push_str("<main>\n");
    graph(&mut out, images, t);
    overview(&mut out, images, t);
    timeline(&mut out, images, page, t);
    out.push_str(
        "<section id=\"details\" aria-labelledby=\"details-h\">\n<h2 id=\"details-h\">Images in detail</h2>\n",
    );
    for (i, img) in images.iter().enumerate() {
        detail(&mut out, i, img, page, t);
    }
    out.push_str("</section>\n");
    if !page.leftovers.is_empty() {
        out.push_str(
            "<section id=\"leftovers\" aria-labelledby=\"leftovers-h\">\n<h2 id=\"leftovers-h\">Left behind</h2>\n\
             <p>These resources were kept (<code>--on-error=abort</code>) or could not be removed; \
             <code>imgbake clean</code> removes them.</p>\n<ul>\n",
        );
        for l in &page.leftovers {
            w!(out, "<li><code>{}</code></li>\n", t.h(l));
        }
        out.push_str("</ul>\n</section>\n");
    }
    out.push_str("</main>\n");
    w!(
        out,
        "<footer>Written by imgbake {} at {}. One self-contained file: it loads nothing from anywhere.</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        time(page.finished)
    );
    out
}

/// The run's verdict: word and CSS class.
fn verdict(page: &Page<'_>, images: &[ImageView<'_>]) -> (&'static str, &'static str) {
    let any = |o: Outcome| images.iter().any(|i| i.builds.iter().any(|b| b.outcome == o));
    if any(Outcome::Cancelled) || any(Outcome::Unfinished) {
        ("interrupted", "interrupted")
    } else if page.summary_ok == Some(true) {
        ("succeeded", "succeeded")
    } else {
        ("failed", "failed")
    }
}

fn header(out: &mut String, page: &Page<'_>, images: &[ImageView<'_>], verdict: (&str, &str), t: &Text) {
    w!(out, "<header>\n<h1>imgbake build report: {}</h1>\n", t.h(page.title));
    let mut counts: Vec<(Outcome, usize)> = Vec::new();
    for b in images.iter().flat_map(|i| &i.builds) {
        match counts.iter_mut().find(|(o, _)| *o == b.outcome) {
            Some((_, n)) => *n += 1,
            None => counts.push((b.outcome, 1)),
        }
    }
    counts.sort_by_key(|(o, _)| *o as u8);
    let counts: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {}", o.as_str())).collect();
    w!(
        out,
        "<p><span class=\"verdict {}\" data-verdict=\"{}\">{} {}</span> <span class=\"muted\">{}</span></p>\n",
        verdict.1,
        verdict.0,
        match verdict.0 {
            "succeeded" => "✓",
            "interrupted" => "⊘",
            _ => "✗",
        },
        verdict.0,
        escape(&counts.join(", "))
    );
    if let Some(n) = page.note {
        w!(out, "<p class=\"note\" role=\"note\">{}</p>\n", t.h(n));
    }
    out.push_str("<dl class=\"facts\">\n");
    if let Some(id) = page.build_id {
        w!(out, "<dt>Build id</dt><dd><code id=\"build-id\">{}</code></dd>\n", t.h(id));
    }
    if let Some(s) = page.started {
        w!(out, "<dt>Started</dt><dd>{}</dd>\n", time(s));
        let took = (page.finished - s).to_std().unwrap_or_default();
        w!(out, "<dt>Ended</dt><dd>{} (took {})</dd>\n", time(page.finished), duration(took));
    } else {
        w!(out, "<dt>Ended</dt><dd>{}</dd>\n", time(page.finished));
    }
    if let Some(m) = &page.manifest {
        w!(out, "<dt>Manifest</dt><dd><code>{}</code></dd>\n", t.h(m));
    }
    out.push_str("</dl>\n</header>\n");
}

fn legend(out: &mut String) {
    out.push_str("<ul class=\"legend\" aria-label=\"Status legend\">\n");
    for o in [
        Outcome::Built,
        Outcome::Reused,
        Outcome::Failed,
        Outcome::Skipped,
        Outcome::Cancelled,
        Outcome::Unfinished,
        Outcome::NotRun,
    ] {
        w!(out, "<li><span class=\"badge {}\">{} {}</span></li>\n", o.class(), o.mark(), o.as_str());
    }
    out.push_str("</ul>\n");
}

/// The text of a node's status line: `✓ built · aws`, or one part per builder.
fn status_line(img: &ImageView<'_>) -> String {
    match img.builds.as_slice() {
        [] => format!("{} {}", Outcome::NotRun.mark(), Outcome::NotRun.as_str()),
        [b] => format!("{} {} · {}", b.outcome.mark(), b.outcome.as_str(), b.builder),
        many => many
            .iter()
            .map(|b| format!("{}: {} {}", b.builder, b.outcome.mark(), b.outcome.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Cuts `s` to `max` characters with an ellipsis (the full text is in the node's tooltip).
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max.saturating_sub(1)).collect::<String>())
    }
}

fn graph(out: &mut String, images: &[ImageView<'_>], t: &Text) {
    out.push_str("<section id=\"graph\" aria-labelledby=\"graph-h\">\n<h2 id=\"graph-h\">The tree</h2>\n");
    legend(out);
    // Wide enough for the longest line (about 7.5 px per character at 13 px), within bounds.
    let longest =
        images.iter().map(|i| t.plain(&i.name).chars().count().max(status_line(i).chars().count())).max().unwrap_or(10);
    let chars = longest.clamp(18, 44);
    let metrics = Metrics { node_width: chars as f64 * 7.5 + 24.0, ..Metrics::default() };
    let names: Vec<(&str, Option<&str>)> = images.iter().map(|i| (i.name.as_str(), i.parent.as_deref())).collect();
    let l = layout(&names, metrics);
    let desc: Vec<String> = images
        .iter()
        .map(|i| match &i.parent {
            Some(p) => format!("{} ({}, built from {})", i.name, i.outcome().as_str(), p),
            None => format!("{} ({})", i.name, i.outcome().as_str()),
        })
        .collect();
    w!(
        out,
        "<div class=\"scroll\">\n<svg class=\"graph\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\" aria-labelledby=\"graph-title graph-desc\">\n\
         <title id=\"graph-title\">The tree of images, parents above their children</title>\n<desc id=\"graph-desc\">{}</desc>\n<g class=\"edges\">\n",
        t.h(&desc.join("; ")),
        w = l.width,
        h = l.height,
    );
    for (i, img) in images.iter().enumerate() {
        let Some(p) = img.parent.as_deref().and_then(|p| images.iter().position(|o| o.name == p)) else { continue };
        let (a, b) = (&l.nodes[p], &l.nodes[i]);
        let (x1, y1) = (a.x + l.node_width / 2.0, a.y + l.node_height);
        let (x2, y2) = (b.x + l.node_width / 2.0, b.y);
        let my = (y1 + y2) / 2.0;
        w!(
            out,
            "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"M{x1:.1} {y1:.1} C{x1:.1} {my:.1} {x2:.1} {my:.1} {x2:.1} {y2:.1}\"/>\n",
            t.h(&images[p].name),
            t.h(&img.name)
        );
    }
    out.push_str("</g>\n<g class=\"nodes\">\n");
    for (i, img) in images.iter().enumerate() {
        let n = &l.nodes[i];
        let o = img.outcome();
        let status = status_line(img);
        w!(
            out,
            "<a href=\"#img-{i}\"><g class=\"node {cls}\" data-image=\"{name}\" data-status=\"{st}\" transform=\"translate({x:.1} {y:.1})\">\
             <title>{name}: {status_full}</title>\
             <rect width=\"{nw:.1}\" height=\"{nh:.1}\" rx=\"8\"/>\
             <text class=\"name\" x=\"12\" y=\"22\">{short}</text>\
             <text class=\"status\" x=\"12\" y=\"42\">{status_short}</text></g></a>\n",
            cls = o.class(),
            name = t.h(&img.name),
            st = o.as_str(),
            x = n.x,
            y = n.y,
            status_full = t.h(&status),
            nw = l.node_width,
            nh = l.node_height,
            short = escape(&fit(&t.plain(&img.name), chars)),
            status_short = escape(&fit(&t.plain(&status), chars)),
        );
    }
    out.push_str("</g>\n</svg>\n</div>\n</section>\n");
}

fn tests_cell(b: &BuildView<'_>) -> String {
    match b.provision() {
        Some(p) if !p.tests.is_empty() => {
            let (pass, fail, skip) = p.test_totals();
            let mut s = format!("{pass} passed, {fail} failed");
            if skip > 0 {
                w!(s, ", {skip} skipped");
            }
            s
        }
        _ => "—".into(),
    }
}

fn overview(out: &mut String, images: &[ImageView<'_>], t: &Text) {
    out.push_str(
        "<section id=\"overview\" aria-labelledby=\"overview-h\">\n<h2 id=\"overview-h\">Images</h2>\n<div class=\"scroll\">\n\
         <table class=\"images\">\n<caption class=\"muted\">One row per image and builder, in tree order</caption>\n\
         <thead><tr><th scope=\"col\">Image</th><th scope=\"col\">Builder</th><th scope=\"col\">Status</th><th scope=\"col\">Took</th>\
         <th scope=\"col\">Tests</th><th scope=\"col\">Artifact</th></tr></thead>\n<tbody>\n",
    );
    for (i, img) in images.iter().enumerate() {
        let builds: Vec<Option<&BuildView<'_>>> =
            if img.builds.is_empty() { vec![None] } else { img.builds.iter().map(Some).collect() };
        for b in builds {
            let o = b.map_or(Outcome::NotRun, |b| b.outcome);
            let artifact = b
                .and_then(|b| b.artifact())
                .map(|a| format!("<code>{}</code>", t.h(&a.id)))
                .unwrap_or_else(|| "—".into());
            w!(
                out,
                "<tr data-image=\"{name}\" data-status=\"{st}\"><th scope=\"row\"><a href=\"#img-{i}\">{name}</a></th><td>{builder}</td>\
                 <td><span class=\"badge {cls}\">{mark} {st}</span></td><td class=\"num\">{took}</td><td>{tests}</td><td>{artifact}</td></tr>\n",
                name = t.h(&img.name),
                st = o.as_str(),
                builder = b.map(|b| t.h(&b.builder)).unwrap_or_default(),
                cls = o.class(),
                mark = o.mark(),
                took = b.and_then(|b| b.duration()).map(duration).unwrap_or_else(|| "—".into()),
                tests = escape(&b.map(tests_cell).unwrap_or_else(|| "—".into())),
            );
        }
    }
    out.push_str("</tbody>\n</table>\n</div>\n</section>\n");
}

fn timeline(out: &mut String, images: &[ImageView<'_>], page: &Page<'_>, t: &Text) {
    let rows: Vec<(&ImageView<'_>, &BuildView<'_>)> = images
        .iter()
        .flat_map(|i| i.builds.iter().map(move |b| (i, b)))
        .filter(|(_, b)| !b.phases.is_empty())
        .collect();
    out.push_str(
        "<section id=\"timeline\" aria-labelledby=\"timeline-h\">\n<h2 id=\"timeline-h\">Timings per phase</h2>\n",
    );
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">No build ran phases in this run.</p>\n</section>\n");
        return;
    }
    let start = rows.iter().flat_map(|(_, b)| b.phases.first().map(|p| p.start)).min().unwrap_or(page.finished);
    let end = rows
        .iter()
        .flat_map(|(_, b)| b.phases.iter().map(|p| p.end.unwrap_or(page.finished)))
        .max()
        .unwrap_or(page.finished)
        .max(start);
    let total = (end - start).to_std().unwrap_or_default().as_secs_f64().max(0.001);
    let (label_w, bar_w, row_h, top) = (200.0, 720.0, 24.0, 22.0);
    let height = top + rows.len() as f64 * row_h + 8.0;
    let width = label_w + bar_w + 20.0;
    let x = |at: DateTime<Utc>| label_w + (at - start).to_std().unwrap_or_default().as_secs_f64() / total * bar_w;
    out.push_str("<ul class=\"legend\" aria-label=\"Phase colours\">\n");
    for p in PHASES {
        w!(out, "<li><span class=\"swatch ph-{p}\"></span>{p}</li>\n");
    }
    out.push_str("</ul>\n");
    w!(
        out,
        "<div class=\"scroll\">\n<svg class=\"timeline\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-labelledby=\"timeline-title\">\n\
         <title id=\"timeline-title\">Each build's phases over the run's time (the table below has the same figures)</title>\n"
    );
    for k in 0..=4 {
        let fx = label_w + bar_w * k as f64 / 4.0;
        let at = Duration::from_secs_f64(total * k as f64 / 4.0);
        w!(
            out,
            "<line class=\"axis\" x1=\"{fx:.1}\" y1=\"{top:.1}\" x2=\"{fx:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{fx:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>\n",
            height - 4.0,
            escape(&duration(at))
        );
    }
    for (r, (img, b)) in rows.iter().enumerate() {
        let y = top + r as f64 * row_h;
        let label = if img.builds.len() > 1 { format!("{} ({})", img.name, b.builder) } else { img.name.clone() };
        w!(
            out,
            "<g class=\"row\" data-image=\"{}\"><text class=\"row-label\" x=\"4\" y=\"{:.1}\">{}</text>\n",
            t.h(&img.name),
            y + 16.0,
            escape(&fit(&t.plain(&label), 26))
        );
        for p in &b.phases {
            let x1 = x(p.start);
            let x2 = x(p.end.unwrap_or(page.finished)).max(x1 + 1.0);
            w!(
                out,
                "<rect class=\"ph-{ph}\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{} {ph}: {}</title></rect>\n",
                y + 4.0,
                x2 - x1,
                row_h - 8.0,
                t.h(&label),
                escape(&duration(p.duration(page.finished))),
                ph = p.phase,
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n</div>\n");
    // The same figures as a table (readable without the picture, and searchable).
    out.push_str("<div class=\"scroll\">\n<table class=\"phases\">\n<thead><tr><th scope=\"col\">Image</th>");
    for p in PHASES {
        w!(out, "<th scope=\"col\">{p}</th>");
    }
    out.push_str("<th scope=\"col\">total</th></tr></thead>\n<tbody>\n");
    for (img, b) in &rows {
        let label = if img.builds.len() > 1 { format!("{} ({})", img.name, b.builder) } else { img.name.clone() };
        w!(out, "<tr data-image=\"{}\"><th scope=\"row\">{}</th>", t.h(&img.name), t.h(&label));
        for p in PHASES {
            let d: Duration = b.phases.iter().filter(|s| s.phase == p).map(|s| s.duration(page.finished)).sum();
            let ran = b.phases.iter().any(|s| s.phase == p);
            w!(out, "<td class=\"num\">{}</td>", if ran { escape(&duration(d)) } else { "—".into() });
        }
        let total: Duration = b.phases.iter().map(|s| s.duration(page.finished)).sum();
        w!(out, "<td class=\"num\">{}</td></tr>\n", escape(&duration(total)));
    }
    out.push_str("</tbody>\n</table>\n</div>\n</section>\n");
}

fn detail(out: &mut String, i: usize, img: &ImageView<'_>, page: &Page<'_>, t: &Text) {
    let o = img.outcome();
    w!(
        out,
        "<section class=\"image-detail\" id=\"img-{i}\" data-image=\"{name}\" aria-labelledby=\"img-{i}-h\">\n\
         <h3 id=\"img-{i}-h\">{name} <span class=\"badge {cls}\">{mark} {st}</span></h3>\n",
        name = t.h(&img.name),
        cls = o.class(),
        mark = o.mark(),
        st = o.as_str(),
    );
    if let Some(p) = &img.parent {
        w!(out, "<p>Built from <strong>{}</strong>.</p>\n", t.h(p));
    }
    if img.builds.iter().all(|b| b.result.is_none())
        && let Some(plan) = &img.planned
    {
        w!(out, "<p>Plan: {}</p>\n", t.h(plan));
    }
    for b in &img.builds {
        build_detail(out, img, b, page, t);
    }
    if !img.warnings.is_empty() {
        out.push_str("<h4>Warnings</h4>\n<ul class=\"warnings\">\n");
        for wa in &img.warnings {
            w!(out, "<li>{}</li>\n", t.h(wa));
        }
        out.push_str("</ul>\n");
    }
    if !img.output.is_empty() {
        let open = matches!(o, Outcome::Failed | Outcome::Cancelled | Outcome::Unfinished);
        w!(
            out,
            "<details{}><summary>Last {} output lines</summary>\n<pre class=\"output\">",
            if open { " open" } else { "" },
            img.output.len()
        );
        for (stream, line) in &img.output {
            let mark = if *stream == Stream::Stderr { "! " } else { "  " };
            w!(out, "{mark}{}\n", t.h(line));
        }
        out.push_str("</pre>\n</details>\n");
    }
    out.push_str("</section>\n");
}

fn build_detail(out: &mut String, img: &ImageView<'_>, b: &BuildView<'_>, page: &Page<'_>, t: &Text) {
    if img.builds.len() > 1 {
        w!(
            out,
            "<h4>{} <span class=\"badge {}\">{} {}</span></h4>\n",
            t.h(&b.builder),
            b.outcome.class(),
            b.outcome.mark(),
            b.outcome.as_str()
        );
    }
    out.push_str("<dl class=\"facts\">\n");
    w!(out, "<dt>Builder</dt><dd>{}</dd>\n", t.h(&b.builder));
    if let Some(s) = b.result.and_then(|r| r.started).or(b.started) {
        w!(out, "<dt>Started</dt><dd>{}</dd>\n", time(s));
    }
    if let Some(d) = b.duration() {
        w!(out, "<dt>Took</dt><dd>{}</dd>\n", duration(d));
    }
    if let Some(r) = b.result
        && !r.reasons.is_empty()
    {
        w!(out, "<dt>Why</dt><dd>{}</dd>\n", t.h(&r.reasons.join("; ")));
    }
    if let Some(a) = b.artifact() {
        w!(out, "<dt>Artifact</dt><dd><code class=\"artifact\">{}</code></dd>\n", t.h(&a.id));
        w!(out, "<dt>Source</dt><dd><code>{}</code></dd>\n", t.h(&a.source));
        w!(out, "<dt>Fingerprint</dt><dd><code>{}</code></dd>\n", t.h(&a.fingerprint));
    }
    if let Some(r) = b.result
        && !r.published.is_empty()
    {
        w!(out, "<dt>Published</dt><dd>{}</dd>\n", t.h(&r.published.join(", ")));
    }
    out.push_str("</dl>\n");
    if let Some(e) = b.error() {
        let at =
            b.result.and_then(|r| r.error_location.as_deref()).map(|l| format!(" ({})", t.h(l))).unwrap_or_default();
        w!(out, "<p><strong>Error</strong>{at}:</p>\n<pre class=\"error\">{}</pre>\n", t.h(e));
    }
    if let Some(a) = b.artifact()
        && !a.locations.is_empty()
    {
        out.push_str("<table class=\"locations\"><thead><tr><th scope=\"col\">Location</th><th scope=\"col\">Id</th></tr></thead><tbody>\n");
        for (loc, id) in &a.locations {
            w!(out, "<tr><td>{}</td><td><code>{}</code></td></tr>\n", t.h(loc), t.h(id));
        }
        out.push_str("</tbody></table>\n");
    }
    if b.phases_ambiguous {
        out.push_str("<p class=\"muted\">Builds of this image by several builders overlapped: events do not say which build a phase belongs to, so no phase timings are shown.</p>\n");
    }
    if let Some(p) = b.provision() {
        if !p.steps.is_empty() {
            out.push_str(
                "<h4>Steps</h4>\n<table class=\"steps\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Step</th><th scope=\"col\">Kind</th>\
                 <th scope=\"col\">Outcome</th><th scope=\"col\">Took</th><th scope=\"col\">Attempts</th><th scope=\"col\">Error</th></tr></thead><tbody>\n",
            );
            for s in &p.steps {
                let cls = match s.outcome {
                    StepOutcome::Ok => "built",
                    StepOutcome::Skipped => "skipped",
                    StepOutcome::Failed => "failed",
                };
                w!(
                    out,
                    "<tr data-outcome=\"{o}\"><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><span class=\"badge {cls}\">{o}</span></td>\
                     <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>\n",
                    s.index,
                    t.h(&s.name),
                    t.h(&s.kind),
                    duration(s.duration),
                    s.attempts,
                    s.error.as_deref().map(|e| format!("<code>{}</code>", t.h(e))).unwrap_or_default(),
                    o = s.outcome.as_str(),
                );
            }
            out.push_str("</tbody></table>\n");
        }
        for suite in &p.tests {
            w!(
                out,
                "<h4>Tests: {}</h4>\n<p class=\"tests\" data-passed=\"{}\" data-failed=\"{}\"><span class=\"badge {}\">{} {}</span> \
                 {} passed, {} failed, {} skipped{}</p>\n",
                t.h(&suite.step),
                suite.passed,
                suite.failed,
                if suite.passed() { "built" } else { "failed" },
                if suite.passed() { "✓" } else { "✗" },
                if suite.passed() { "passed" } else { "failed" },
                suite.passed,
                suite.failed,
                suite.skipped,
                suite
                    .exit_code
                    .map(|c| format!("; the test command exited {c}"))
                    .unwrap_or_else(|| "; the test command did not exit normally".into()),
            );
            let failing: Vec<_> =
                suite.cases.iter().filter(|c| matches!(c.outcome, CaseOutcome::Failed | CaseOutcome::Error)).collect();
            if !failing.is_empty() {
                out.push_str("<ul class=\"failing-tests\">\n");
                for c in failing {
                    let kind = if c.outcome == CaseOutcome::Error { "error" } else { "failed" };
                    w!(
                        out,
                        "<li data-test=\"{name}\"><code>{suite} › {class} › {name}</code> ({kind}){}</li>\n",
                        c.message.as_deref().map(|m| format!(": {}", t.h(m))).unwrap_or_default(),
                        name = t.h(&c.name),
                        suite = t.h(&c.suite),
                        class = t.h(&c.classname),
                    );
                }
                out.push_str("</ul>\n");
            }
        }
    }
    if !b.phases.is_empty() {
        out.push_str("<details><summary>Phases</summary>\n<table class=\"phase-list\"><thead><tr><th scope=\"col\">Phase</th><th scope=\"col\">Began</th><th scope=\"col\">Took</th></tr></thead><tbody>\n");
        for p in &b.phases {
            w!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}{}</td></tr>\n",
                p.phase,
                time(p.start),
                duration(p.duration(page.finished)),
                if p.end.is_none() { " (unfinished)" } else { "" }
            );
        }
        out.push_str("</tbody></table>\n</details>\n");
    }
}
