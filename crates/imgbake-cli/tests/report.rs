//! `imgbake build --report`: a real build on the bed (moto behind the moto proxy, the bed's sshd as
//! every machine) of a three-level tree — base → runtime → app, base → broken (its tests fail) →
//! broken-child (skipped) — writes one HTML file, which real headless Chromium (Debian's) then loads:
//! every image is drawn, parents above children, with its status in words and colours, a table row
//! per image, the failing test by name, nothing injected by names or output, nothing fetched, and the
//! sensitive variable nowhere. An interrupted build writes its report too.

#[path = "support/events.rs"]
mod events;
#[path = "support/moto_env.rs"]
mod moto_env;
#[allow(dead_code)]
#[path = "../../imgbake-aws/tests/aws/support.rs"]
mod support;
#[path = "support/watchdog.rs"]
mod watchdog;
use events::spawn_until;
use watchdog::Watched;

use std::process::Command;
use std::time::Duration;

use imgbake_testbed::{Chromium, SshTarget};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Bed, REGION};

const TOKEN: &str = "tok-report-5e1d-never-print-me";

/// The JUnit report of the broken image's tests: one passes, one fails; the failing one's name
/// holds markup, its output the token (replaced on the machine).
const BROKEN_JUNIT: &str = r#"<testsuite name="smoke" tests="2" failures="1">
<testcase classname="web" name="serves_index"/>
<testcase classname="web" name="rejects &lt;img src=x onerror=alert(1)&gt;"><failure message="got 500">token TOKEN_HERE</failure></testcase>
</testsuite>
"#;

const RUNTIME_JUNIT: &str = r#"<testsuite name="runtime" tests="2">
<testcase classname="java" name="java_runs"/>
<testcase classname="java" name="heap_is_set"/>
</testsuite>
"#;

fn write_tree(bed: &Bed, app_step: &str) {
    let dir = bed.dir.path();
    for (sub, junit) in [("tests-runtime", RUNTIME_JUNIT), ("tests-broken", BROKEN_JUNIT)] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("junit.xml"), junit).unwrap();
    }
    let tree = format!(
        r#"[settings]
id = "cli-report-0001"
manifest = "out/manifest.json"
parallel = 1

[variables.token]
sensitive = true

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"], poll_interval = "300ms" }}

[images.base]
source = {{ ami = "{source}" }}
[[images.base.steps]]
name = "uses the token"
shell = {{ inline = ["echo \"token is $TOKEN\""], env = {{ TOKEN = "{{{{var.token}}}}" }} }}

[images.runtime]
parent = "base"
[[images.runtime.steps]]
name = "runtime tests"
test = {{ source = "tests-runtime", destination = "{machine}/runtime", command = "cp junit.xml report.xml", report = "report.xml" }}

[images.app]
parent = "runtime"
[[images.app.steps]]
name = "deploy"
shell = {{ inline = ["{app_step}"] }}

[images.broken]
parent = "base"
[[images.broken.steps]]
name = "smoke <script>alert(1)</script>"
test = {{ source = "tests-broken", destination = "{machine}/broken", command = "sed \"s/TOKEN_HERE/$TOKEN/\" junit.xml > report.xml; echo \"<b>bold</b> $TOKEN\"; exit 1", report = "report.xml", env = {{ TOKEN = "{{{{var.token}}}}" }} }}

[images.broken-child]
parent = "broken"
"#,
        source = bed.source,
        port = bed.sshd.port(),
        endpoint = bed.proxy.endpoint(),
        // Every bed's "machine" is this host: tests running at once must not share a directory.
        machine = dir.join("machine").display(),
    );
    std::fs::write(dir.join("tree.toml"), tree).unwrap();
}

fn imgbake(bed: &Bed, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.args(args).args(["--var", &format!("token={TOKEN}")]).current_dir(bed.dir.path());
    moto_env::on_moto(&mut c);
    c
}

/// A page that frames the report (same directory) and, once it is loaded and laid out, writes what
/// the browser shows into `#result` as JSON: every graph node with its box and fill colour, every
/// table row's text, elements that must not exist, and the resources the report fetched.
const HARNESS: &str = r#"<!DOCTYPE html><html><body><pre id="result">not loaded</pre>
<iframe id="report" src="report.html" width="1280" height="1000"></iframe>
<script>
document.getElementById('report').addEventListener('load', function () {
  var out = {};
  try {
    var d = this.contentDocument;
    out.nodes = Array.from(d.querySelectorAll('svg.graph g.node')).map(function (g) {
      var r = g.querySelector('rect').getBoundingClientRect();
      return { image: g.getAttribute('data-image'), status: g.getAttribute('data-status'),
               text: Array.from(g.querySelectorAll('text')).map(function (t) { return t.textContent; }).join(' | '),
               x: r.x, y: r.y, w: r.width, h: r.height, fill: getComputedStyle(g.querySelector('rect')).fill };
    });
    out.rows = Array.from(d.querySelectorAll('table.images tbody tr')).map(function (tr) {
      return { image: tr.getAttribute('data-image'), text: tr.innerText };
    });
    out.forbidden = d.querySelectorAll('script, img, iframe, object, embed, b').length;
    out.fetched = this.contentWindow.performance.getEntriesByType('resource').length;
    out.text = d.body.innerText;
  } catch (e) { out.error = String(e); }
  document.getElementById('result').textContent = JSON.stringify(out);
});
</script></body></html>
"#;

/// What Chromium rendered of the report next to the harness, as the harness's JSON.
async fn rendered(dir: &std::path::Path) -> serde_json::Value {
    std::fs::write(dir.join("harness.html"), HARNESS).unwrap();
    let chromium = Chromium::new().expect("chromium (scripts/install-packages.sh bed)");
    eprintln!("browser: {}", chromium.version().await.unwrap());
    let dom = chromium.dump_dom(&dir.join("harness.html")).await.unwrap();
    let start = dom.find("<pre id=\"result\">").expect("the harness in the dumped DOM") + "<pre id=\"result\">".len();
    let json = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    // The DOM serialiser escapes text: undo the entities it uses.
    let json = json.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_writes_a_report_that_chromium_shows_with_every_image() {
    let bed = Bed::start().await;
    write_tree(&bed, "echo deployed");
    let o = imgbake(&bed, &["build", "tree.toml", "--report", "report.html"]).watched();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "broken's tests fail the run:\n{stdout}\n{stderr}");
    assert!(stderr.contains("report: report.html"), "{stderr}");
    let build_id = stdout.split("build ").nth(1).and_then(|s| s.split(':').next()).unwrap().to_string();

    let html = std::fs::read_to_string(bed.dir.path().join("report.html")).unwrap();
    assert!(!html.contains(TOKEN), "the sensitive value is redacted in the report");
    assert!(html.contains("token is &lt;sensitive&gt;"), "the output using it is there, redacted");
    assert!(!html.contains("<script"), "the step name's markup is text");

    let r = rendered(bed.dir.path()).await;
    assert!(r.get("error").is_none(), "the harness could read the report: {r}");
    assert_eq!(r["forbidden"], 0, "names, output and test names injected no element: {r}");
    assert_eq!(r["fetched"], 0, "the report fetched nothing");

    let want = [
        ("base", "built", None),
        ("runtime", "built", Some("base")),
        ("app", "built", Some("runtime")),
        ("broken", "failed", Some("base")),
        ("broken-child", "skipped", Some("broken")),
    ];
    let nodes = r["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), want.len(), "one node per image: {r}");
    let node = |image: &str| nodes.iter().find(|n| n["image"] == image).unwrap_or_else(|| panic!("{image}: {r}"));
    let f = |n: &serde_json::Value, k: &str| n[k].as_f64().unwrap();
    for (image, status, parent) in want {
        let n = node(image);
        assert_eq!(n["status"], status, "{image}");
        let text = n["text"].as_str().unwrap();
        assert!(text.starts_with(image) && text.contains(status), "{image}'s node says {status} in words: {text}");
        assert!(f(n, "w") > 50.0 && f(n, "h") > 20.0, "{image} is drawn: {n}");
        if let Some(p) = parent {
            assert!(f(node(p), "y") + f(node(p), "h") < f(n, "y"), "{p} is drawn above {image}");
        }
    }
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let apart = f(a, "x") + f(a, "w") <= f(b, "x")
                || f(b, "x") + f(b, "w") <= f(a, "x")
                || f(a, "y") + f(a, "h") <= f(b, "y")
                || f(b, "y") + f(b, "h") <= f(a, "y");
            assert!(apart, "{a} and {b} overlap");
        }
    }
    assert_ne!(node("base")["fill"], node("broken")["fill"], "built and failed differ in colour too");
    assert_ne!(node("broken")["fill"], node("broken-child")["fill"]);

    let rows = r["rows"].as_array().unwrap();
    for (image, status, _) in want {
        let row = rows.iter().find(|row| row["image"] == image).unwrap_or_else(|| panic!("row of {image}: {r}"));
        assert!(row["text"].as_str().unwrap().contains(status), "{row}");
    }
    let text = r["text"].as_str().unwrap();
    assert!(text.contains(&build_id), "the build id {build_id}");
    assert!(text.contains("rejects <img src=x onerror=alert(1)>"), "the failing test by name, as text:\n{text}");
    assert!(text.contains("smoke <script>alert(1)</script>"), "the step name, as text");
    assert!(text.contains("2 passed, 0 failed"), "runtime's test counts");
    assert!(text.contains("1 passed, 1 failed"), "broken's test counts");
    assert!(!text.contains(TOKEN));
    // Every artifact with its id per region, as the summary printed it.
    for line in stdout.lines().filter(|l| l.trim_start().starts_with("built")) {
        let ami = line.split_whitespace().find(|w| w.starts_with("ami-")).unwrap();
        assert!(text.contains(ami), "{ami} ({line}) in the report");
    }
    assert!(text.contains(REGION), "the artifacts' region");
    assert!(text.contains("provision"), "phase timings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_build_writes_its_report() {
    let bed = Bed::start().await;
    write_tree(&bed, "sleep 60");
    let mut build =
        tokio::process::Command::from(imgbake(&bed, &["build", "tree.toml", "--json", "--report", "report.html"]));
    let (mut child, _) =
        spawn_until(&mut build, "app's deploy step", |e| e["event"] == "step_started" && e["image"] == "app").await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let status =
        tokio::time::timeout(Duration::from_secs(120), child.wait()).await.expect("exits after Ctrl-C").unwrap();
    assert_eq!(status.code(), Some(130));
    let html = std::fs::read_to_string(bed.dir.path().join("report.html")).expect("the report of the interrupted run");
    assert!(html.contains("data-verdict=\"interrupted\""), "{html}");
    assert!(html.contains("data-image=\"app\" data-status=\"cancelled\""));
    assert!(html.contains("data-image=\"runtime\" data-status=\"built\""), "what finished before is shown");
    assert!(html.contains("interrupted: running builds were stopped"));
}
