//! A sensitive value reaches no output of imgbake: a real `imgbake build` on the bed (moto behind the
//! moto proxy, the bed's sshd as the machine), with the value given by `--var` and by
//! `IMGBAKE_VAR_*`, used in step environments, echoed by steps to stdout and stderr, written into a
//! test report and into the error of a failing step. Every byte imgbake wrote — terminal output in
//! both modes, NDJSON, debug logs, the manifest, journals, kept reports, the HTML report of
//! `--report`, every file under the tree's directory — and the machine's sshd log (what would land
//! in the image's auth log) is searched.

#[path = "support/moto_env.rs"]
mod moto_env;
#[allow(dead_code)]
#[path = "../../imgbake-aws/tests/aws/support.rs"]
mod support;
#[path = "support/watchdog.rs"]
mod watchdog;
use watchdog::Watched;

use std::path::Path;
use std::process::Command;

use imgbake_testbed::SshTarget;
use support::{Bed, REGION};

const TOKEN: &str = "tok-4f1c9e2a-never-print-me";
const PASSWORD: &str = "pw-77d0b3-never-print-me";

fn tree(bed: &Bed) -> String {
    format!(
        r#"[settings]
id = "cli-secrets-0001"
manifest = "out/manifest.json"
parallel = 1

[variables.token]
sensitive = true

[variables.db_password]
sensitive = true

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
# `build --force` right after `build`: a name per build, not per second.
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"], poll_interval = "300ms", ami_name = "{{{{ image.name }}}}-{{{{ uuid }}}}" }}

[images.base]
source = {{ ami = "{source}" }}
[[images.base.steps]]
name = "uses the secrets"
shell = {{ inline = ["test -n \"$TOKEN\"", "echo \"token is $TOKEN\"", "echo \"password is $DB_PASSWORD\" >&2"], env = {{ TOKEN = "{{{{var.token}}}}", DB_PASSWORD = "{{{{var.db_password}}}}" }} }}
[[images.base.steps]]
name = "tests that print the secret"
test = {{ command = "printf '<testsuite name=\"s\" tests=\"1\"><testcase name=\"c\"><system-out>%s</system-out></testcase></testsuite>' \"$TOKEN\" > report.xml", report = "report.xml", env = {{ TOKEN = "{{{{var.token}}}}" }} }}

[images.app]
parent = "base"
[[images.app.steps]]
name = "fails saying the secret"
shell = {{ inline = ["echo \"cannot log in with $DB_PASSWORD\" >&2", "exit 3"], env = {{ DB_PASSWORD = "{{{{var.db_password}}}}" }} }}
"#,
        source = bed.source,
        port = bed.sshd.port(),
        endpoint = bed.proxy.endpoint(),
    )
}

fn imgbake(bed: &Bed, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.args(args)
        .args(["--var", &format!("token={TOKEN}")])
        .current_dir(bed.dir.path())
        .env("IMGBAKE_VAR_db_password", PASSWORD)
        .env("RUST_LOG", "debug");
    moto_env::on_moto(&mut c);
    c
}

/// Every regular file under `dir`, with its bytes.
fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap()));
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_value_reaches_no_output() {
    let bed = Bed::start().await;
    std::fs::write(bed.dir.path().join("tree.toml"), tree(&bed)).unwrap();

    // Every output, by where it went.
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, args) in [
        ("validate", vec!["validate", "tree.toml"]),
        ("plan", vec!["plan", "tree.toml"]),
        ("plan --json", vec!["plan", "tree.toml", "--json"]),
        ("build", vec!["build", "tree.toml", "--report", "out/report.html"]),
        ("build --json --force", vec!["build", "tree.toml", "--json", "--force"]),
    ] {
        let o = imgbake(&bed, &args).watched();
        outputs.push((format!("{what}: stdout"), o.stdout.clone()));
        outputs.push((format!("{what}: stderr"), o.stderr.clone()));
        if what.starts_with("build") {
            // The base image is built, the app's step fails: the secret was used and printed.
            assert_eq!(o.status.code(), Some(1), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let json = String::from_utf8_lossy(&outputs[8].1).to_string();
    assert!(json.contains("token is <sensitive>"), "the step ran and its output was redacted:\n{json}");
    assert!(json.contains("cannot log in with <sensitive>"), "{json}");
    let logs = String::from_utf8_lossy(&outputs[7].1).to_string();
    assert!(logs.contains("DEBUG"), "RUST_LOG=debug logs are among the outputs searched:\n{logs}");
    files_under(bed.dir.path(), &mut outputs);
    assert!(
        outputs.iter().any(|(p, _)| p.ends_with("out/manifest.json")),
        "the manifest is among them: {:?}",
        outputs.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert!(outputs.iter().any(|(p, _)| p.contains("/reports/base/")), "and the kept test report");
    let report = outputs.iter().find(|(p, _)| p.ends_with("out/report.html")).expect("and the HTML report (--report)");
    assert!(contains(&report.1, "cannot log in with &lt;sensitive&gt;"), "whose failed step used the secret");
    // What the machine logged about the build's sessions (the image's auth log, on a real machine).
    outputs.push(("the machine's sshd log".into(), bed.sshd.log().into_bytes()));

    for (what, bytes) in &outputs {
        for secret in [TOKEN, PASSWORD] {
            assert!(!contains(bytes, secret), "{secret} leaked into {what}:\n{}", String::from_utf8_lossy(bytes));
        }
    }
}
